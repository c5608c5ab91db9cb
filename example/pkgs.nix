# A small package set that mimics how nixpkgs names and structures native
# and cross-compiled packages, without needing nixpkgs or a network.
#
#   cross = true:  build platform x86_64-linux, host platform the target's
#                  (aarch64-linux by default). Built for real with Debian's
#                  cross compiler for the target.
#   cross = false: the same set as native derivations of the target's
#                  system. It is only instantiated, to learn the out paths a
#                  native build would have.
#   target:        "aarch64" (default), "riscv64" or "armv7l"; see targets.
#
# Packages compiled for the host get the host suffix in their name, like
# nixpkgs' stdenv.mkDerivation does when cross compiling:
#   pname + version -> hello-aarch64-unknown-linux-gnu-2.12
#   name only       -> hello-compat-1.0-aarch64-unknown-linux-gnu
# Packages that compile nothing (data, scripts, writeText-like) and packages
# for the build platform keep their native name.
#
# Builders are impure (/bin/sh and the host's tools, sandbox off).
{ cross ? true, target ? "aarch64" }:

let
  # config: the host's config, as nixpkgs names it (the host suffix);
  # system: the Nix system of a native build; triple: Debian's name for the
  # target (its cross gcc and /usr/<triple>/lib); loader: glibc's dynamic
  # loader for the target's ABI.
  targets = {
    aarch64 = {
      config = "aarch64-unknown-linux-gnu";
      system = "aarch64-linux";
      triple = "aarch64-linux-gnu";
      loader = "ld-linux-aarch64.so.1";
    };
    riscv64 = {
      config = "riscv64-unknown-linux-gnu";
      system = "riscv64-linux";
      triple = "riscv64-linux-gnu";
      loader = "ld-linux-riscv64-lp64d.so.1";
    };
    armv7l = {
      config = "armv7l-unknown-linux-gnueabihf";
      system = "armv7l-linux";
      triple = "arm-linux-gnueabihf";
      loader = "ld-linux-armhf.so.3";
    };
  };
  host = targets.${target} or (throw
    "example/pkgs.nix: unknown target \"${target}\"; known: ${builtins.concatStringsSep ", " (builtins.attrNames targets)}");

  hostConfig = host.config;
  system = if cross then "x86_64-linux" else host.system;
  cc = if cross then "/usr/bin/${host.triple}-gcc" else "/usr/bin/gcc";
  # Where the host's Debian C library lives on the machine that builds.
  libcDir = if cross then "/usr/${host.triple}/lib" else "/lib/${host.triple}";
  inherit (host) loader;

  # stdenv.mkDerivation look-alike. hostSuffix = false marks stdenvNoCC-like
  # and build-platform packages.
  mkDerivation =
    { pname ? null, version ? null, name ? null, hostSuffix ? true
    , outputs ? [ "out" ], buildCommand, ... }@args:
    let
      suffix = if cross && hostSuffix then "-${hostConfig}" else "";
      fullName =
        if pname != null then "${pname}${suffix}-${version}" else "${name}${suffix}";
    in
    derivation (builtins.removeAttrs args [ "pname" "version" "name" "hostSuffix" "buildCommand" ]
      // (if pname != null then { inherit pname version; } else { })
      // {
        name = fullName;
        inherit system outputs;
        builder = "/bin/sh";
        args = [ "-euc" buildCommand ];
        PATH = "/usr/bin:/bin";
      }
      // (if hostSuffix then { CC = cc; } else { }));

  # Flags for linking against store libraries. RUNPATH (new dtags) is what
  # nixpkgs produces; -rpath-link lets the cross linker find indirect
  # dependencies without embedding them.
  runpath = libs: builtins.concatStringsSep " "
    ([ "-Wl,--enable-new-dtags" ] ++ map (l: "-Wl,-rpath,${l}/lib") libs);
  exeFlags = libs:
    "-Wl,--dynamic-linker=${glibc}/lib/${loader} ${runpath (libs ++ [ glibc ])}";

  glibc = mkDerivation {
    pname = "glibc";
    version = "2.36";
    inherit libcDir;
    buildCommand = ''
      mkdir -p $out/lib
      cp -L $libcDir/${loader} $libcDir/libc.so.6 $out/lib/
    '';
  };

  mkLibbase = version: soversion: mkDerivation {
    pname = "libbase";
    inherit version;
    src = ./src/libbase.c;
    header = ./src/libbase.h;
    buildCommand = ''
      mkdir -p $out/lib $out/include
      cp $header $out/include/libbase.h
      # Compile a copy: the source's store path would otherwise end up in
      # the symbol table and so in the runtime closure.
      cp $src libbase.c
      $CC -shared -fPIC -O2 -DLIBBASE_VERSION='"${version}"' -I$out/include \
        -Wl,-soname,libbase.so.${soversion} ${runpath [ glibc ]} \
        -o $out/lib/libbase.so.${soversion} libbase.c
      ln -s libbase.so.${soversion} $out/lib/libbase.so
    '';
  };
  libbase_1_0 = mkLibbase "1.0" "1";
  libbase_2_0 = mkLibbase "2.0" "2";

  greet-data = mkDerivation {
    pname = "greet-data";
    version = "1.0";
    hostSuffix = false;
    buildCommand = ''
      mkdir -p $out/share/greet
      echo "greetings from the store" > $out/share/greet/greeting.txt
    '';
  };

  # Multiple outputs: the shared object in lib, headers, pkg-config file
  # and an absolute cross-output symlink in dev, documentation in out.
  libgreet = mkDerivation {
    pname = "libgreet";
    version = "0.3";
    outputs = [ "out" "lib" "dev" ];
    src = ./src/greet.c;
    header = ./src/greet.h;
    buildCommand = ''
      mkdir -p $out/share/doc/libgreet $lib/lib $dev/include $dev/lib/pkgconfig
      cp $header $dev/include/greet.h
      cp $src greet.c
      $CC -shared -fPIC -O2 \
        -DGREETING_FILE='"${greet-data}/share/greet/greeting.txt"' \
        -I$dev/include -I${libbase_2_0}/include \
        -Wl,-soname,libgreet.so.0 ${runpath [ libbase_2_0 glibc ]} \
        -o $lib/lib/libgreet.so.0 greet.c -L${libbase_2_0}/lib -lbase
      ln -s $lib/lib/libgreet.so.0 $dev/lib/libgreet.so
      cat > $dev/lib/pkgconfig/greet.pc <<EOF
      includedir=$dev/include
      libdir=$lib/lib
      Name: greet
      Description: example greeting library
      Version: 0.3
      Cflags: -I$dev/include
      Libs: -L$lib/lib -lgreet
      EOF
      echo "libgreet 0.3 reads its greeting from ${greet-data}" > $out/share/doc/libgreet/README
    '';
  };

  # Fixed-output source: the same store path on both sides (the output
  # path of a fixed-output derivation does not depend on its system).
  hello-src = derivation {
    name = "hello-2.12.c";
    inherit system;
    builder = "/bin/sh";
    args = [ "-c" "printf '%s' \"$content\" > $out" ];
    content = builtins.readFile ./src/hello.c;
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" (builtins.readFile ./src/hello.c);
  };

  hello = mkDerivation {
    pname = "hello";
    version = "2.12";
    src = hello-src;
    buildCommand = ''
      mkdir -p $out/bin $out/share/hello
      echo "Hello, world!" > $out/share/hello/message.txt
      cp $src hello.c
      $CC -O2 -DMESSAGE_FILE='"'$out'/share/hello/message.txt"' \
        -I${libgreet.dev}/include -o $out/bin/hello hello.c \
        -L${libgreet.dev}/lib -lgreet -Wl,-rpath-link,${libbase_2_0}/lib \
        ${exeFlags [ libgreet.lib ]}
      ln -s hello $out/bin/hi
    '';
  };

  # Only name is set, so the host suffix goes at the end.
  hello-compat = mkDerivation {
    name = "hello-compat-1.0";
    src = ./src/hello-compat.c;
    buildCommand = ''
      mkdir -p $out/bin
      cp $src hello-compat.c
      $CC -O2 -I${libbase_1_0}/include -o $out/bin/hello-compat hello-compat.c \
        -L${libbase_1_0}/lib -lbase ${exeFlags [ libbase_1_0 ]}
    '';
  };

  # Scripts only: their text names store paths that must be rewritten.
  hello-wrapper = mkDerivation {
    pname = "hello-wrapper";
    version = "1.0";
    hostSuffix = false;
    buildCommand = ''
      mkdir -p $out/bin
      cat > $out/bin/hello-wrapper <<'EOF'
      #!/bin/sh
      exec ${hello}/bin/hello "$@"
      EOF
      cat > $out/bin/hello-compat-wrapper <<'EOF'
      #!/bin/sh
      exec ${hello-compat}/bin/hello-compat "$@"
      EOF
      chmod +x $out/bin/*
    '';
  };

  # A build-platform package. On the cross side it is an x86_64 program
  # (Debian's bash, with its libraries outside the store); anything whose
  # closure contains it leaks the build platform.
  bash = mkDerivation {
    pname = "bash";
    version = "5.2";
    hostSuffix = false;
    buildCommand = ''
      mkdir -p $out/bin
      cp /bin/bash $out/bin/bash
      ln -s bash $out/bin/sh
    '';
  };

  leaky = mkDerivation {
    pname = "hello-bash-wrapper";
    version = "1.0";
    hostSuffix = false;
    buildCommand = ''
      mkdir -p $out/bin
      cat > $out/bin/hello-bash-wrapper <<'EOF'
      #!${bash}/bin/bash
      exec ${hello}/bin/hello "$@"
      EOF
      chmod +x $out/bin/hello-bash-wrapper
    '';
  };

  packages = {
    inherit glibc libbase_1_0 libbase_2_0 greet-data libgreet hello-src hello
      hello-compat hello-wrapper bash leaky;
  };
in
packages // {
  inherit packages;
  # The closure the README demo serves: hello-wrapper and everything it
  # runs (hello, hello-compat, libgreet, both libbase versions, glibc).
  main = hello-wrapper;
}
