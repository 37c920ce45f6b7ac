package ifaces

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// Decision is what the rules decide for one link.
type Decision struct {
	Link
	Selected bool
	// Why names the rule, exclusion or default selection reason.
	Why string
	// Ingress and Egress are the hooks a selected link is captured on.
	Ingress, Egress bool
}

// Decide applies the rules to links, ordered by ifindex. ingress and egress
// are the daemon's hooks; perRule says whether a rule's :direction applies
// (tc capture: socket capture sees both directions of every link). The
// master of each link is looked up among links.
func Decide(r Rules, links []Link, ingress, egress, perRule bool) []Decision {
	byIndex := make(map[int]Link, len(links))
	for _, l := range links {
		byIndex[l.Index] = l
	}
	out := make([]Decision, 0, len(links))
	for _, l := range links {
		if mst, ok := byIndex[l.MasterIndex]; ok && l.MasterIndex != 0 {
			l.MasterKind, l.MasterName = mst.Kind, mst.Name
		}
		d := Decision{Link: l}
		d.Selected, d.Why = r.Explain(l)
		if d.Selected {
			dir := r.Direction(l)
			if !perRule {
				dir = DirDefault
			}
			d.Ingress, d.Egress = dir.Hooks(ingress, egress)
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Decision) int { return a.Index - b.Index })
	return out
}

// Plan lists the links of the calling thread's network namespace and
// decides each as Decide does: the interfaces the daemon would capture on
// now.
func Plan(r Rules, ingress, egress, perRule bool) ([]Decision, error) {
	nl, _, err := listLinks()
	if err != nil {
		return nil, err
	}
	links := make([]Link, 0, len(nl))
	for _, l := range nl {
		links = append(links, linkOf(l))
	}
	return Decide(r, links, ingress, egress, perRule), nil
}

// WriteDecisions writes decisions as a table, each line starting with
// prefix (check-config writes them as YAML comments).
func WriteDecisions(w io.Writer, prefix string, ds []Decision) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%sIFINDEX\tNAME\tKIND\tCAPTURE\tWHY\n", prefix)
	for _, d := range ds {
		capture := "no"
		if d.Selected {
			capture = hookNames(d.Ingress, d.Egress)
		}
		fmt.Fprintf(tw, "%s%d\t%s\t%s\t%s\t%s\n", prefix, d.Index, d.Name, d.Kind, capture, d.Why)
	}
	return tw.Flush()
}
