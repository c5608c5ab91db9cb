// Package pairing builds the native-to-cross mapping from two derivation
// graphs, and checks what a mapping would serve.
//
// The graphs are the closures of a native derivation (instantiated for the
// host, never built) and of the cross derivation that was built. Names alone
// are ambiguous: stdenvNoCC derivations and build-platform tools carry no
// host suffix and share their names with native derivations, and two
// derivations may have the same name. Pair therefore walks both graphs from
// root pairs and matches the inputs of paired derivations only, by name with
// the host suffix removed, then by output names and by where the input is
// used in the environment; fixed-output derivations and plain sources are
// the same store path on both sides and need no pair.
//
// Only the runtime closure of the built cross outputs is served, so Map
// walks that closure in the upstream store and emits an entry for each
// input-addressed path of it. Every path is classified from its name (the
// host suffix makes it host), its contents (ELF of the host platform, of
// the build platform, or neither) and the graph (reached only as a
// build-platform input: nativeBuildInputs and the like, also inside
// __structuredAttrs' __json, or the builder); a path that references a
// build-platform path is a leak, reported with the entries that hold the
// reference. When several cross paths pair with one native path, a host
// one is served, then a neutral one; a tie is a problem. Check does the
// same for an existing mapping file.
//
// The platforms come from the data: Map takes the host from the native
// roots' system and the build platform from the cross roots', and records
// both in the mapping; Check reads them from the mapping file, or infers
// them from the derivers and the host suffix. ELF of other platforms,
// Mach-O and PE files decide no class and are named in a note.
//
// Derivations come from a DrvSource. Through Store.NarFromPath they may
// come from a remote daemon (a .drv is a NAR holding one regular file), but
// each costs a daemon connection; DirSource reads them from the store's
// directory instead, trusting a file only when it hashes to its path, and
// falls back to the store otherwise. LoadGraph reads several at once.
package pairing
