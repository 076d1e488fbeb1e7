package main

// pair is one real source-level fix of a real C program from Debian: OLD
// and NEW are either two versions of a source package (bookworm against
// bookworm-security) or one version's tree without and with one of its
// debian/patches.
type pair struct {
	name string
	// pkg is the source package; oldVer and newVer its versions. With
	// patch set, newVer is unused: OLD is oldVer's tree with patch (and
	// every patch after it in the series) reverse-applied, NEW the same
	// with only the patches after it reverse-applied.
	pkg, oldVer, newVer string
	patch               string
	// dir is the top of the build inside the unpacked tree ("" = root).
	dir string
	// build is the shell recipe run in dir; $CFLAGS holds -O2 -g. It must
	// leave artifact (relative to dir) behind.
	build    string
	artifact string
	// fix names what the change fixes, for the table.
	fix string
}

var pairs = []pair{
	{
		name: "memcached", pkg: "memcached", oldVer: "1.6.18-1", newVer: "1.6.18-1+deb12u1",
		// As Debian builds it (debian/rules) plus the SASL password
		// database, where one of the fixes is; the proxy, where the
		// others are, is not built.
		build:    `./configure CFLAGS="$CFLAGS" --enable-sasl --enable-sasl-pwdb --enable-tls >config.out 2>&1 && make -j2 memcached >make.out 2>&1`,
		artifact: "memcached",
		fix:      "bookworm -> bookworm-security (SASL password check: CVE-2026-47783/47784)",
	},
	{
		name: "xz-utils", pkg: "xz-utils", oldVer: "5.4.1-1+deb12u1", newVer: "5.4.1-1+deb12u2",
		build:    `./configure CFLAGS="$CFLAGS" --disable-nls --disable-doc >config.out 2>&1 && make -j2 -C src/liblzma >make.out 2>&1`,
		artifact: "src/liblzma/.libs/liblzma.so.5.4.1",
		fix:      "deb12u1 -> deb12u2 (liblzma: three decoder/filter-chain fixes)",
	},
	{
		name: "libxml2", pkg: "libxml2", oldVer: "2.9.14+dfsg-1.3~deb12u4", newVer: "2.9.14+dfsg-1.3~deb12u6",
		// Regenerated as Debian's build does (dh_autoreconf): the
		// patches touch Makefile.am.
		build:    `autoreconf -fi >autoreconf.out 2>&1 && ./configure CFLAGS="$CFLAGS" --without-python --without-lzma >config.out 2>&1 && make -j2 libxml2.la >make.out 2>&1`,
		artifact: ".libs/libxml2.so.2.9.14",
		fix:      "deb12u4 -> deb12u6 (13 patches: CVE-2025-9714, CVE-2026-0989/0990/0992/1757, CVE-2025-8732, leaks)",
	},
	{
		name: "expat", pkg: "expat", oldVer: "2.5.0-1+deb12u2", patch: "CVE-2024-45490.patch", dir: "expat",
		build:    `./buildconf.sh >buildconf.out 2>&1 && ./configure CFLAGS="$CFLAGS" --without-docbook --without-examples --without-tests >config.out 2>&1 && make -j2 -C lib >make.out 2>&1`,
		artifact: "lib/.libs/libexpat.so.1.8.10",
		fix:      "debian/patches CVE-2024-45490 (XML_ParseBuffer negative length)",
	},
	{
		name: "libpng", pkg: "libpng1.6", oldVer: "1.6.39-2+deb12u5", patch: "CVE-2025-64505.patch",
		build:    `./configure CFLAGS="$CFLAGS" >config.out 2>&1 && make -j2 libpng16.la >make.out 2>&1`,
		artifact: ".libs/libpng16.so.16.39.0",
		fix:      "debian/patches CVE-2025-64505 (png_set_quantize: heap over-read)",
	},
	{
		name: "nginx", pkg: "nginx", oldVer: "1.22.1-9+deb12u9", patch: "CVE-2025-23419.patch",
		build:    `./configure --with-cc-opt="$CFLAGS" --with-http_ssl_module >config.out 2>&1 && make -j2 >make.out 2>&1`,
		artifact: "objs/nginx",
		fix:      "debian/patches CVE-2025-23419 (TLS session reuse across virtual servers)",
	},
	{
		name: "openssh", pkg: "openssh", oldVer: "1:9.2p1-2+deb12u10", patch: "CVE-2023-48795.patch",
		// The release's own configure: Debian's patches to configure.ac
		// add options not used here (and this autoconf regenerates a
		// configure that misdetects the system), so it is only marked
		// as up to date; the fix does not touch it.
		build:    `touch configure config.h.in && ./configure CFLAGS="$CFLAGS" >config.out 2>&1 && make -j2 sshd >make.out 2>&1`,
		artifact: "sshd",
		fix:      "debian/patches CVE-2023-48795 (Terrapin: strict key exchange)",
	},
}
