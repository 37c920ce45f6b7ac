package main

import "runtime"

// version is set at build time: -ldflags "-X main.version=$(git describe)".
var version = "dev"

func goVersion() string { return runtime.Version() }
