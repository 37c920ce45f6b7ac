package ifaces

// Name returns the name of the link with index idx as the manager knows
// it now, following renames and removals (Run keeps it current), or "" if
// no such link is known. It takes no netlink round trip: it is cheap
// enough to call once per exported flow.
func (m *Manager) Name(idx int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.links[idx].Name
}
