// Package metrics collects what decross-store does as Prometheus metrics
// and serves them over HTTP.
//
// A Metrics holds its own registry, so that two servers in one process
// (or two tests) never share counters. The packages it observes do not
// depend on Prometheus: daemonproto.Server and sshserver.Server each take
// a Hooks interface, which Protocol and SSH implement, and the store and
// the cache are wired in by the command through the exported methods
// (Rewrote, CacheHit, UpstreamDone, ObserveCache).
//
// Every metric is named decross_store_*, with its unit in the name;
// durations are histograms in seconds. Label values come from fixed sets
// (doors, operation names, reasons, limits), never from what a client
// sends, so the number of series stays bounded.
package metrics
