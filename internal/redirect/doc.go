// Package redirect writes the NAT rules that send an application's
// outbound TCP to the sidecar's capture listener: `sidecar redirect`, run
// once in the pod's network namespace with CAP_NET_ADMIN before the
// application starts.
//
// The rules live in one nftables table, inet batchmesh, with one chain,
// output (type nat, hook output), programmed over netlink: no iptables or
// nft binary is needed. Apply replaces the whole table in one transaction,
// so running it twice is the same as once; Clean removes it; Render prints
// the table in nft syntax for -dry-run, from the same rule terms Apply
// programs.
//
// The chain returns (does not capture) non-TCP traffic, the sidecar's own
// user (and group, and other excluded users such as Envoy's), 127.0.0.1
// and ::1, excluded destinations and ports; then redirects the captured
// ports (or all of them) to the proxy port. Locally generated connections
// are redirected to 127.0.0.1 or ::1, and the sidecar reads their original
// destination with SO_ORIGINAL_DST (internal/capture).
//
// docs/capture.md describes the rules, the flags and the beside-Istio
// ordering.
package redirect
