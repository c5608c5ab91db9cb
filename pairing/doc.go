// Package pairing builds the native-to-cross mapping from two derivation
// graphs, and checks what a mapping would serve.
//
// The graphs are the closures of a native derivation (instantiated for the
// host, never built) and of the cross derivation that was built. Names alone
// are ambiguous and not even equal: stdenvNoCC derivations and
// build-platform tools carry no host suffix and share their names with
// native derivations; cross compilers carry a target prefix instead
// ("aarch64-unknown-linux-gnu-gcc-13.3.0"); and some inputs differ in name,
// derivation and output (natively glibc takes libgcc from the bootstrap
// xgcc's libgcc output, cross from a standalone libgcc's out). Pair
// therefore walks both graphs from root pairs and pairs the inputs of
// paired derivations only, on three kinds of evidence:
//
//   - name: the only native input of the same name once the host suffix,
//     a target prefix (<triple>-, <triple>-nolibc-, <triple>-stage-final-,
//     <triple>-stage-static-) or the bootstrap xgcc is accounted for,
//     narrowed by output names, use in the environment and inputs;
//   - role: the only store path of the same attribute on both sides;
//   - position: the word of an attribute with the same text around the
//     store path, as often on both sides (the word
//     "user-defined-trusted-dirs=<path>/lib" of glibc's makeFlags),
//     whatever the names.
//
// Role and position pair outputs, not only derivations: the cross output
// sits where a native output sits, so libgcc's out stands for xgcc's
// libgcc. A place in a dependency list (buildInputs, nativeBuildInputs,
// propagated...) is no evidence, whatever its length: the lists need not
// have the same members; nor is a fixed-output input. A pair by structure
// alone needs the same version on both sides. Evidence must agree; where it
// does not, or leaves several candidates, the failure lists them and
// nothing is guessed. An unmarked cross derivation (no suffix, no prefix)
// named like a marked one is a build-platform namesake (the x86_64
// bash-5.2p37 next to bash-aarch64-unknown-linux-gnu-5.2p37) and does not
// pair. Options.Pairs settles the rest; such pairs are reported when they
// contradict the evidence or are never reached. Every pair records its
// Basis, which Map reports per path. Native inputs without a cross
// counterpart (libidn2, which only native glibc uses) are never asked for.
// Fixed-output derivations and plain sources are the same store path on
// both sides and need no pair. A path of the cross runtime closure that
// pairs with nothing is a problem only when a served path references it;
// otherwise nothing asks for it and Map only notes it.
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
