package ifaces

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Attacher is what Manager drives: bpf.FlowFetcher and SockFlowFetcher.
type Attacher interface {
	Attach(ifindex int, name string) error
	Detach(ifindex int) error
}

// HookAttacher can attach to chosen hooks of one interface, for rules with
// a direction (bpf.FlowFetcher). An Attacher without it attaches every
// interface the same way and ignores rule directions.
type HookAttacher interface {
	AttachHooks(ifindex int, name string, ingress, egress bool) error
	// SetHooks changes the hooks of an attached interface, attaching the
	// added hooks before it detaches the removed ones and leaving the
	// others alone.
	SetHooks(ifindex int, ingress, egress bool) error
	// Hooks are the hooks Attach uses.
	Hooks() (ingress, egress bool)
}

// attachment is what an attached link was attached as.
type attachment struct {
	name string
	dir  Direction
}

// Link is the state of one link as Manager sees it.
type Link struct {
	Index    int
	Name     string
	Up       bool
	Loopback bool
	// Kind is the netlink link kind (IFLA_INFO_KIND: veth, bridge,
	// bond, vlan, ...), "device" for a link without one (physical).
	Kind string
	// MasterIndex is the ifindex of the link's master (bridge, bond,
	// team, VRF, Open vSwitch), 0 for none; MasterKind and MasterName
	// are the master's kind and name when known.
	MasterIndex int
	MasterKind  string
	MasterName  string
	// LowerElsewhere says that the link's lower link (vlan, macvlan,
	// ipvlan) or peer (veth) is in another network namespace
	// (IFLA_LINK_NETNSID).
	LowerElsewhere bool
}

// State is an interface's attach state, for metrics and logs.
type State struct {
	Name     string
	Attached bool
	// Err is the last attach error, nil when attached.
	Err error
}

// SubscribeFunc subscribes to link updates, as
// netlink.LinkSubscribeWithOptions does.
type SubscribeFunc func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, opts netlink.LinkSubscribeOptions) error

// Manager keeps the attached set equal to the links the rules select.
type Manager struct {
	att       Attacher
	log       *slog.Logger
	subscribe SubscribeFunc

	mu       sync.Mutex
	rules    Rules
	links    map[int]Link // every link seen
	attached map[int]attachment
	failed   map[int]error // last attach error of selected links
}

// NewManager returns a manager that attaches through att.
func NewManager(att Attacher, rules Rules, log *slog.Logger) *Manager {
	return &Manager{att: att, rules: rules, log: log, subscribe: netlink.LinkSubscribeWithOptions,
		links: map[int]Link{}, attached: map[int]attachment{}, failed: map[int]error{}}
}

// SetSubscribe replaces how Run subscribes to link updates, before Run
// (for tests: a subscription that fails or ends).
func (m *Manager) SetSubscribe(f SubscribeFunc) { m.subscribe = f }

// Start lists the links of the calling thread's network namespace and
// attaches to those the rules select. An attach that fails is an error: at
// start, the user should hear about it at once. A link named exactly in the
// rules that does not exist yet, or rules that select no link yet, are
// warnings: a service may start before its interfaces (at boot, or on a
// container host whose veths come later), and Run attaches them when they
// appear.
func (m *Manager) Start() error {
	links, _, err := listLinks()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record(links)
	if err := m.reconcileAll(); err != nil {
		return err
	}
	m.warnMissing()
	return nil
}

// warnMissing warns of each link named in the rules that does not exist,
// and when no link is attached. Called with mu held.
func (m *Manager) warnMissing() {
	for _, n := range m.rules.Names() {
		if !m.hasName(n) {
			m.log.Warn("interface does not exist yet: attached when it appears", "interface", n)
		}
	}
	if len(m.attached) == 0 {
		m.log.Warn("no interface selected yet: capture starts when a link the rules select appears", "rules", m.rules.String())
	}
}

func (m *Manager) hasName(name string) bool {
	for _, l := range m.links {
		if l.Name == name {
			return true
		}
	}
	return false
}

// Run follows netlink link updates until ctx ends. Errors while following
// are logged and kept in States: a link that fails to attach later must
// not stop capture on the others. Once subscribed, it lists the links
// again, so that a Run after another one ended also releases the links
// removed in between. It returns an error when the subscription fails or
// ends; it may then be called again.
func (m *Manager) Run(ctx context.Context) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 1)
	err := m.subscribe(updates, done, netlink.LinkSubscribeOptions{
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	if err := m.resync(); err != nil {
		m.log.Warn("list links again", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				return fmt.Errorf("link updates: %w", err)
			}
			// Links changed while the kernel listed them: the
			// subscription goes on, but the list may have missed
			// some. List again.
			if err := m.resync(); err != nil {
				m.log.Warn("list links again", "err", err)
			}
		case u, ok := <-updates:
			if !ok {
				return errors.New("link updates: subscription closed")
			}
			m.handle(u)
		}
	}
}

func (m *Manager) handle(u netlink.LinkUpdate) {
	l := linkOf(u.Link)
	m.mu.Lock()
	defer m.mu.Unlock()
	if u.Header.Type == unix.RTM_DELLINK {
		m.remove(l.Index)
		return
	}
	m.links[l.Index] = l
	if err := m.reconcile(l); err != nil {
		m.log.Warn("attach", "interface", l.Name, "ifindex", l.Index, "err", err)
	}
	// The default selection of a port depends on its master's kind:
	// reconcile the ports of a master that appears after them.
	for _, p := range m.links {
		if p.MasterIndex == l.Index && p.Index != l.Index {
			if err := m.reconcile(p); err != nil {
				m.log.Warn("attach", "interface", p.Name, "ifindex", p.Index, "err", err)
			}
		}
	}
}

// withMaster fills in the kind and name of l's master from the links
// known. Called with mu held.
func (m *Manager) withMaster(l Link) Link {
	if mst, ok := m.links[l.MasterIndex]; ok && l.MasterIndex != 0 {
		l.MasterKind, l.MasterName = mst.Kind, mst.Name
	}
	return l
}

// reconcile attaches or detaches one link as the rules say. When its
// rule's direction changed, only the hooks added are attached and only
// those removed detached (added first): a hook that stays counts on
// through the change. Called with mu held.
func (m *Manager) reconcile(l Link) error {
	l = m.withMaster(l)
	want, why := m.rules.Explain(l)
	dir := m.rules.Direction(l)
	ha, hooked := m.att.(HookAttacher)
	if !hooked {
		dir = DirDefault
	}
	cur, have := m.attached[l.Index]
	if have && !want {
		delete(m.attached, l.Index)
		if err := m.att.Detach(l.Index); err != nil {
			return fmt.Errorf("detach %s: %w", l.Name, err)
		}
		m.log.Info("detached", "interface", l.Name, "ifindex", l.Index)
		have = false
	}
	if !want {
		delete(m.failed, l.Index)
		return nil
	}
	if have && cur.dir != dir {
		in, eg := dir.Hooks(ha.Hooks())
		if curIn, curEg := cur.dir.Hooks(ha.Hooks()); curIn != in || curEg != eg {
			if err := ha.SetHooks(l.Index, in, eg); err != nil {
				return fmt.Errorf("change hooks of %s: %w", l.Name, err)
			}
			m.log.Info("hooks changed", "interface", l.Name, "ifindex", l.Index, "from", hookNames(curIn, curEg), "to", hookNames(in, eg))
		}
		m.attached[l.Index] = attachment{name: cur.name, dir: dir}
		return nil
	}
	if have {
		return nil
	}
	var err error
	if hooked && dir != DirDefault {
		in, eg := dir.Hooks(false, false)
		err = ha.AttachHooks(l.Index, l.Name, in, eg)
	} else {
		err = m.att.Attach(l.Index, l.Name)
	}
	if err != nil {
		m.failed[l.Index] = err
		return err
	}
	delete(m.failed, l.Index)
	m.attached[l.Index] = attachment{name: l.Name, dir: dir}
	m.log.Info("attached", "interface", l.Name, "ifindex", l.Index, "kind", l.Kind, "direction", dir.String(), "why", why)
	return nil
}

func hookNames(ingress, egress bool) string {
	switch {
	case ingress && egress:
		return "both"
	case ingress:
		return "ingress"
	case egress:
		return "egress"
	}
	return "none"
}

// remove forgets a link that is gone. Called with mu held.
func (m *Manager) remove(idx int) {
	delete(m.links, idx)
	delete(m.failed, idx)
	if a, ok := m.attached[idx]; ok {
		// The kernel removed the hooks with the link; this releases
		// hostflow's side of them.
		delete(m.attached, idx)
		if err := m.att.Detach(idx); err != nil {
			m.log.Warn("release removed interface", "interface", a.name, "ifindex", idx, "err", err)
		}
		m.log.Info("interface removed", "interface", a.name, "ifindex", idx)
	}
}

// resync lists the links again and reconciles each: after an interrupted
// dump, a link may have been missed, and while no subscription ran, links
// may have come and gone. A link known but no longer listed is released,
// unless the list may be incomplete.
func (m *Manager) resync() error {
	links, complete, err := listLinks()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if complete {
		listed := make(map[int]bool, len(links))
		for _, l := range links {
			listed[l.Attrs().Index] = true
		}
		for idx := range m.links {
			if !listed[idx] {
				m.remove(idx)
			}
		}
		for idx := range m.attached {
			if !listed[idx] {
				m.remove(idx)
			}
		}
	}
	m.record(links)
	return m.reconcileAll()
}

// record notes the links listed. Called with mu held.
func (m *Manager) record(links []netlink.Link) {
	for _, l := range links {
		lk := linkOf(l)
		m.links[lk.Index] = lk
	}
}

// reconcileAll reconciles every known link. Called with mu held.
func (m *Manager) reconcileAll() error {
	var errs []error
	for _, l := range m.links {
		errs = append(errs, m.reconcile(l))
	}
	return errors.Join(errs...)
}

// SetRules replaces the rules (on reload) and reconciles every known link
// at once. Attach errors are returned and kept in States; named links that
// do not exist and rules that select nothing are warned of, as by Start.
func (m *Manager) SetRules(r Rules) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rules = r
	err := m.reconcileAll()
	m.warnMissing()
	return err
}

// DetachAll releases every attached link (at shutdown).
func (m *Manager) DetachAll() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for idx, a := range m.attached {
		if err := m.att.Detach(idx); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", a.name, err))
		} else {
			m.log.Info("detached", "interface", a.name, "ifindex", idx)
		}
		delete(m.attached, idx)
	}
	return errors.Join(errs...)
}

// States returns the selected links and whether each is attached.
func (m *Manager) States() map[int]State {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int]State, len(m.attached)+len(m.failed))
	for idx, a := range m.attached {
		out[idx] = State{Name: a.name, Attached: true}
	}
	for idx, err := range m.failed {
		out[idx] = State{Name: m.links[idx].Name, Err: err}
	}
	return out
}

// Names returns the names of the links with the given indexes known now,
// for the exporter's interface table.
func (m *Manager) Links() []Link {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Link, 0, len(m.links))
	for _, l := range m.links {
		out = append(out, l)
	}
	return out
}

// listLinks lists the links, again when the kernel says the list changed
// while it was being dumped (bounded: a namespace whose links never stop
// changing gets the last list, and complete false).
func listLinks() (links []netlink.Link, complete bool, err error) {
	for range 5 {
		links, err = netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		return links, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("list links: %w", err)
	}
	return links, true, nil
}

func linkOf(l netlink.Link) Link {
	a := l.Attrs()
	return Link{
		Index:          a.Index,
		Name:           a.Name,
		Up:             a.Flags&net.FlagUp != 0,
		Loopback:       a.Flags&net.FlagLoopback != 0,
		Kind:           l.Type(),
		MasterIndex:    a.MasterIndex,
		LowerElsewhere: a.NetNsID >= 0,
	}
}
