//go:build linux

package redirect

import (
	"fmt"

	"github.com/google/nftables"
)

// Apply replaces the batchmesh table with the rules for o in one netlink
// transaction: running it twice leaves the same rules as once, and no
// connection ever sees half a ruleset. It needs CAP_NET_ADMIN in the
// network namespace to change.
func Apply(o *Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("redirect: netlink: %w", err)
	}
	t := resetTable(c)
	ch := c.AddChain(&nftables.Chain{
		Name:     ChainName,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookOutput,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(o.Priority)),
	})
	for _, r := range Rules(o) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.Exprs()})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("redirect: programming table inet %s: %w (is this root with CAP_NET_ADMIN, and does the kernel have nf_tables and nf_nat?)", TableName, err)
	}
	return nil
}

// Clean removes the batchmesh table, if there is one.
func Clean() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("redirect: netlink: %w", err)
	}
	c.DelTable(c.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}))
	if err := c.Flush(); err != nil {
		return fmt.Errorf("redirect: removing table inet %s: %w", TableName, err)
	}
	return nil
}

// resetTable queues, in c's transaction, the creation of the table (a
// no-op when it exists), its deletion with everything in it, and its
// creation afresh.
func resetTable(c *nftables.Conn) *nftables.Table {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	c.DelTable(c.AddTable(t))
	return c.AddTable(t)
}
