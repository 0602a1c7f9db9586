# static.cmake - CHORUS_STATIC: chorusd and clusterctl linked with -static, for
# the FROM scratch container image (deploy/Dockerfile, docs/deploy.md).
#
# Only the two executables change; every other target (libchorus.so, the
# plugin, the tests) builds as usual in the same tree. The targets they link
# bring imported dependencies that name shared objects (nng's CMake package,
# pkg-config's IMPORTED_TARGETs resolve to full .so paths), and -static cannot
# take a .so. So chorus_link_static() replaces the executable's link line with
# our own archives ($<TARGET_FILE:...>) and Debian's static archives, keeping
# the compile-side usage requirements (include directories, definitions,
# options), which CMake evaluates transitively for $<TARGET_PROPERTY:...>.
#
# Debian's libnng.a is built with TLS, so it needs mbedtls's three archives
# (libmbedtls-dev) although Chorus never uses TLS. glibc warns at link time
# that getaddrinfo() and dlopen() in a static program want glibc's shared
# objects at run time: name lookups work without them (glibc 2.34+ has the
# files and dns NSS modules inside libc, and both read /etc/hosts and
# /etc/resolv.conf, which Docker provides), plugins (--plugin) do not (a
# plugin would bring a second, shared libc): a static chorusd refuses to
# start with one (node/main.c, CHORUS_STATIC_BUILD).

# name of the archive (lib<name>.a) and the Debian package that ships it, in
# link order (a library before what it uses)
set(CHORUS_STATIC_DEPS
  "nng:libnng-dev"
  "mbedtls:libmbedtls-dev"
  "mbedx509:libmbedtls-dev"
  "mbedcrypto:libmbedtls-dev"
  "sqlite3:libsqlite3-dev"
  "inih:libinih-dev"
  "jansson:libjansson-dev"
  "protobuf-c:libprotobuf-c-dev"
  "sodium:libsodium-dev")

set(CHORUS_STATIC_ARCHIVES "")
foreach(dep ${CHORUS_STATIC_DEPS})
  string(REPLACE ":" ";" dep "${dep}")
  list(GET dep 0 lib)
  list(GET dep 1 debpkg)
  string(MAKE_C_IDENTIFIER "CHORUS_STATIC_LIB_${lib}" var)
  find_library(${var} NAMES lib${lib}.a)
  if(NOT ${var})
    message(FATAL_ERROR "CHORUS_STATIC: lib${lib}.a not found: apt-get install ${debpkg}")
  endif()
  list(APPEND CHORUS_STATIC_ARCHIVES ${${var}})
endforeach()

# chorus_link_static(TARGET ARCHIVE_TARGET...): links TARGET with -static
# against ARCHIVE_TARGETs (our static libraries, in link order) and
# CHORUS_STATIC_ARCHIVES, instead of what target_link_libraries gave it.
function(chorus_link_static target)
  set(files "")
  foreach(lib ${ARGN})
    target_include_directories(${target} PRIVATE $<TARGET_PROPERTY:${lib},INTERFACE_INCLUDE_DIRECTORIES>)
    target_compile_definitions(${target} PRIVATE $<TARGET_PROPERTY:${lib},INTERFACE_COMPILE_DEFINITIONS>)
    target_compile_options(${target} PRIVATE $<TARGET_PROPERTY:${lib},INTERFACE_COMPILE_OPTIONS>)
    list(APPEND files $<TARGET_FILE:${lib}>)
  endforeach()
  add_dependencies(${target} ${ARGN})
  # a group: our archives call each other both ways (the node uses the
  # client library, the client library the wire code)
  set_property(TARGET ${target} PROPERTY LINK_LIBRARIES
    -Wl,--start-group ${files} -Wl,--end-group ${CHORUS_STATIC_ARCHIVES} m)
  set_property(TARGET ${target} PROPERTY ENABLE_EXPORTS OFF)
  target_link_options(${target} PRIVATE -static -pthread)
  target_compile_definitions(${target} PRIVATE CHORUS_STATIC_BUILD=1)
endfunction()
