// Package integration holds hostflow's end-to-end tests: they build network
// namespaces joined by veth pairs, run the hostflow binary in one of them
// against a real collector (nfcapd), send traffic, and compare what the
// collector stored with the interface counters.
//
// The tests need root, iproute2, ethtool and nfdump. They skip without them,
// except under CI=true, where a missing prerequisite fails the run.
package integration
