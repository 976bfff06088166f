// Package depcheck holds no code: its test, deps_test.go, checks the import
// graph of the batchmesh module against the rules docs/architecture.md
// explains.
//
// The rules are a table of (packages, forbidden imports, reason). They cover
// the non-test imports of the module's packages, as `go list -deps` reports
// them; a package that does not exist yet matches no rule. Run it with
//
//	go test ./internal/depcheck
//
// It exports no metrics.
package depcheck
