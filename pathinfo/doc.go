// Package pathinfo holds the metadata Nix keeps for a store path (what
// QueryPathInfo returns and a narinfo file describes) and computes its
// signature fingerprint.
//
// It is shared by the protocol layer, the upstream reader and the store so
// that none of them depends on another just for this type.
package pathinfo
