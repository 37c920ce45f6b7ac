package main

// ifName is the name of interface idx for the JSON lines and the control
// socket's flows, from the links the manager follows (renames and
// removals included); "" before the manager starts and for a link it does
// not know (removed since the flow was seen).
func (d *daemon) ifName(idx uint32) string {
	if d.links == nil {
		return ""
	}
	return d.links.Name(int(idx))
}
