// Package noop holds a TC program that does nothing. It is the baseline of
// kernel-cost measurements and the foreign TC program of coexistence tests.
package noop

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel Noop ../../c/noop.c -- -I/usr/include/x86_64-linux-gnu
