# Pairs every output of the native package set with the same attribute and
# output of the cross set. This is pairing by the set's structure only; it
# does not look at derivation graphs.
#
#   file:  the mapping file, {"paths": [...]}; outputs that are the same
#          store path on both sides (fixed-output sources) are left out
#   attrs: every pair, including those, for tests and build logs
#
# target is pkgs.nix's: "aarch64" (default), "riscv64" or "armv7l".
{ target ? "aarch64" }:
let
  native = (import ./pkgs.nix { cross = false; inherit target; }).packages;
  cross = (import ./pkgs.nix { cross = true; inherit target; }).packages;

  pairsOf = attr:
    map
      (output: {
        inherit attr output;
        native = native.${attr}.${output}.outPath;
        cross = cross.${attr}.${output}.outPath;
        nativeDrv = native.${attr}.drvPath;
        crossDrv = cross.${attr}.drvPath;
      })
      (native.${attr}.outputs or [ "out" ]);

  attrs = builtins.concatMap pairsOf (builtins.attrNames native);
  differing = builtins.filter (p: p.native != p.cross) attrs;
in
rec {
  inherit attrs;
  file = { inherit paths; };
  paths = map
    (p: { inherit (p) native cross output; deriver = p.nativeDrv; })
    (builtins.sort (a: b: a.native < b.native) differing);
}
