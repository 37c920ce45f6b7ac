// Package ifaces decides which network interfaces hostflow captures on and
// keeps that true while links come and go.
//
// Rules select links by exact name, /regex/ or the keywords default and
// all, with exclusions; with no include rule, the default selection (Edge)
// selects the host's edge from each link's kind and master, so that each
// packet is counted once per host. Manager
// applies the rules to the links that exist at start and then to every
// netlink link update: a link that appears or comes up and matches is
// attached, a link that goes away, or is renamed so that it no longer
// matches, is released.
package ifaces
