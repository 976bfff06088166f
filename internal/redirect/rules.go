package redirect

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ChainName is the NAT output chain in TableName.
const ChainName = "output"

// A term is one part of a rule: the nft text that a listing prints for it
// and the expressions that the kernel runs. Both come from the same term,
// so that -dry-run prints what Apply programs.
type term struct {
	text  string
	exprs []expr.Any
}

// Rule is one rule of the chain, in order.
type Rule struct{ terms []term }

// String is the rule in nft syntax, as `nft list ruleset` prints it.
func (r Rule) String() string {
	parts := make([]string, len(r.terms))
	for i, t := range r.terms {
		parts[i] = t.text
	}
	return strings.Join(parts, " ")
}

// Exprs are the rule's expressions for the kernel.
func (r Rule) Exprs() []expr.Any {
	var out []expr.Any
	for _, t := range r.terms {
		out = append(out, t.exprs...)
	}
	return out
}

// Rules returns the chain's rules for o, in order: first everything that
// is never captured (not TCP, the sidecar's own users, loopback 127.0.0.1
// and ::1, excluded destinations and ports), then the redirects. o must be
// valid.
func Rules(o *Options) []Rule {
	ret := term{text: "return", exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}}
	rules := []Rule{{terms: []term{l4proto(false), ret}}}
	uids := append([]uint32{o.ProxyUID}, o.ExcludeUIDs...)
	for _, uid := range uids {
		rules = append(rules, Rule{terms: []term{owner(expr.MetaKeySKUID, "skuid", uid), ret}})
	}
	if o.ProxyGID >= 0 {
		rules = append(rules, Rule{terms: []term{owner(expr.MetaKeySKGID, "skgid", uint32(o.ProxyGID)), ret}})
	}
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}
	for _, p := range append(loopback, o.ExcludeCIDRs...) {
		rules = append(rules, Rule{terms: []term{daddr(p), ret}})
	}
	for _, pr := range o.ExcludePorts {
		rules = append(rules, Rule{terms: []term{dport(pr), ret}})
	}
	redir := redirectTo(o.ProxyPort)
	dests := o.IncludeCIDRs
	if len(dests) == 0 {
		dests = []netip.Prefix{{}} // every destination
	}
	for _, p := range dests {
		var to []term
		if p.IsValid() {
			to = append(to, daddr(p))
		}
		if o.AllPorts {
			rules = append(rules, Rule{terms: append(to, l4proto(true), redir)})
			continue
		}
		for _, pr := range o.Ports {
			rules = append(rules, Rule{terms: append(append(to[:len(to):len(to)], dport(pr)), redir)})
		}
	}
	return rules
}

// Render prints the table for o in nft syntax, as `nft list ruleset`
// prints it; `nft -f` accepts it.
func Render(o *Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n\tchain %s {\n", TableName, ChainName)
	fmt.Fprintf(&b, "\t\ttype nat hook output priority %d; policy accept;\n", o.Priority)
	for _, r := range Rules(o) {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func l4proto(tcp bool) term {
	op, text := expr.CmpOpNeq, "meta l4proto != tcp"
	if tcp {
		op, text = expr.CmpOpEq, "meta l4proto tcp"
	}
	return term{text: text, exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}}
}

func owner(key expr.MetaKey, name string, id uint32) term {
	data := binary.NativeEndian.AppendUint32(nil, id)
	return term{text: fmt.Sprintf("meta %s %d", name, id), exprs: []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}}
}

// daddr matches the destination address against p (IPv4 or IPv6).
func daddr(p netip.Prefix) term {
	proto, family, offset := byte(unix.NFPROTO_IPV4), "ip", uint32(16)
	if p.Addr().Is6() {
		proto, family, offset = unix.NFPROTO_IPV6, "ip6", 24
	}
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if p.Bits() == 0 {
		return term{text: "meta nfproto " + map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[proto], exprs: exprs}
	}
	n := uint32(p.Addr().BitLen() / 8)
	exprs = append(exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n})
	text := family + " daddr " + p.Addr().String()
	if p.Bits() < p.Addr().BitLen() {
		mask := make([]byte, n)
		for i := range mask {
			switch rem := p.Bits() - 8*i; {
			case rem >= 8:
				mask[i] = 0xff
			case rem > 0:
				mask[i] = 0xff << (8 - rem)
			}
		}
		exprs = append(exprs, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
		text = family + " daddr " + p.String()
	}
	exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
	return term{text: text, exprs: exprs}
}

// dport matches the TCP destination port against r.
func dport(r PortRange) term {
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
	if r.First == r.Last {
		exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(r.First)})
	} else {
		exprs = append(exprs, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(r.First), ToData: be16(r.Last)})
	}
	return term{text: "tcp dport " + r.String(), exprs: exprs}
}

func redirectTo(port uint16) term {
	return term{text: fmt.Sprintf("redirect to :%d", port), exprs: []expr.Any{
		&expr.Immediate{Register: 1, Data: be16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
