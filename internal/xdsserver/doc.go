// Package xdsserver turns a batchmesh config into xDS resources (DESIGN.md
// §7) and serves them over ADS with go-control-plane v0.14: one snapshot
// per node group (node.cluster), versions that only move forward, and NACK
// detection that keeps a rejected version from being re-sent in a loop
// (go-control-plane#962).
//
// It exports no metrics yet: NACK counts are available from Server.NACKs
// for the binary to export as batchmesh_xds_nacks_total{type}.
package xdsserver
