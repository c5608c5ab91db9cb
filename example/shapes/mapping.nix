# The mapping `decross-store map` must find for the roots of pkgs.nix:
# each native runtime output paired with the cross output that plays its
# role. Unlike example/mapping.nix this is not by attribute name: libgcc_s
# is xgcc's libgcc output natively and the standalone libgcc's out cross,
# libstdc++ is gcc's lib output on both sides but of differently named
# compilers, and bash is the host bash, not the build-platform namesake.
#
# Native paths with no cross counterpart (gcc-13.3.0-libgcc, libidn2,
# libunistring) are left out: the cross closure never reaches them.
#
#   file:  the mapping file, {"paths": [...]}, sorted by native path
#   roles: every pair with its role and both .drv paths, for tests
#   roots: the root pairs of .drv paths, for `map --pairs`
let
  native = import ./pkgs.nix { cross = false; };
  cross = import ./pkgs.nix { cross = true; };

  pair = role: n: c: {
    inherit role;
    native = n.outPath;
    cross = c.outPath;
    output = n.outputName;
    crossOutput = c.outputName;
    nativeDrv = n.drvPath;
    crossDrv = c.drvPath;
  };

  roles =
    map (r: pair r native.roots.${r} cross.roots.${r}) (builtins.attrNames native.roots)
    ++ map (r: pair r native.runtime.${r} cross.runtime.${r}) (builtins.attrNames native.runtime);
in
rec {
  inherit roles;
  roots = map (r: { native = native.roots.${r}.drvPath; cross = cross.roots.${r}.drvPath; })
    (builtins.attrNames native.roots);
  file = { inherit paths; };
  paths = map
    (p: { inherit (p) native cross output; deriver = p.nativeDrv; })
    (builtins.sort (a: b: a.native < b.native) roles);
}
