# A wide closure for benchmarks: `count` small packages shaped like a real
# runtime closure. Package i holds aarch64 machine code (a slice of one of
# Debian's arm64 libraries) with its own store path and its dependencies'
# embedded, random data, a text file naming its dependencies and a symlink
# into one of them. Sizes run from 51 KiB to about 500 KiB. Package i
# references itself and 1-5 packages of higher index, and package 0
# references package 1, so the closure of p0 is all of them (attributes p0,
# p1, ...).
{ cross ? true, count ? 300 }:
let
  system = if cross then "x86_64-linux" else "aarch64-linux";
  suffix = if cross then "-aarch64-unknown-linux-gnu" else "";
  libs = [ "libc.so.6" "libm.so.6" "libstdc++.so.6.0.30" "libgomp.so.1.0.0" "ld-linux-aarch64.so.1" ];
  depsOf = i:
    let
      n = 1 + (i * 7) - (((i * 7) / 5) * 5); # 1..5
      candidates = builtins.genList (k: i + 1 + k * (1 + i - ((i / 3) * 3))) n;
    in
    builtins.filter (j: j <= count) candidates;
  pkg = i:
    let
      deps = map (j: pkgs."p${toString j}") (depsOf i);
      kib = 51 + (i * 7919) - (((i * 7919) / 450) * 450); # 51..500 KiB
      lib = builtins.elemAt libs (i - ((i / 5) * 5));
    in
    derivation {
      name = "closurepkg${toString i}${suffix}-1.0";
      inherit system;
      builder = "/bin/sh";
      PATH = "/usr/bin:/bin";
      args = [ "-euc" ''
        mkdir -p $out/lib $out/share/doc $out/bin
        code=$(( ${toString kib} * 1024 * 6 / 10 ))
        {
          head -c $((code / 2)) /usr/aarch64-linux-gnu/lib/${lib}
          printf '%s\0' "$out/lib" ${toString (map (d: "${d}/lib/libclosure.so") deps)}
          tail -c $((code / 2)) /usr/aarch64-linux-gnu/lib/${lib}
          printf '%s\0' "$out/share"
        } > $out/lib/libclosure.so
        head -c $(( ${toString kib} * 1024 * 3 / 10 )) /dev/urandom > $out/share/data.bin
        for d in ${toString deps}; do echo "depends on $d"; done > $out/share/doc/README
        echo "installed in $out" >> $out/share/doc/README
        ln -s ${builtins.head deps}/lib/libclosure.so $out/bin/dep-lib
      '' ];
    };
  pkgs = builtins.listToAttrs (builtins.genList (i: { name = "p${toString i}"; value = pkg i; }) count)
    // { "p${toString count}" = leaf; };
  leaf = derivation {
    name = "closureleaf${suffix}-1.0";
    inherit system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    args = [ "-euc" "mkdir -p $out/lib; head -c 65536 /usr/aarch64-linux-gnu/lib/libc.so.6 > $out/lib/libclosure.so" ];
  };
in
pkgs
