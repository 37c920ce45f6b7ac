// Package ifaces decides which network interfaces hostflow captures on and
// keeps that true while links come and go.
//
// Rules select links by exact name or /regex/, with exclusions; with no
// include rule, every link that is up and not loopback is selected. Manager
// applies the rules to the links that exist at start and then to every
// netlink link update: a link that appears or comes up and matches is
// attached, a link that goes away, or is renamed so that it no longer
// matches, is released.
package ifaces
