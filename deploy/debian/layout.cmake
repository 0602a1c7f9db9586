# layout.cmake - run by cpack (CPACK_PRE_BUILD_SCRIPTS) on the staged tree of
# the Debian package, before it is packed.
#
# `cmake --install` puts everything under the prefix, /usr for the package.
# Two files belong outside it on a Debian host: the config file goes to /etc
# (usr/etc -> etc) and the systemd unit to /lib/systemd/system, where Debian
# 12 packages keep their units (usr/lib/systemd -> lib/systemd). Each move
# must find its source, so a changed install() cannot slip through.
set(root "${CPACK_TEMPORARY_INSTALL_DIRECTORY}")
if(NOT IS_DIRECTORY "${root}/usr")
  message(FATAL_ERROR "layout.cmake: no usr/ in the staged tree ${root}")
endif()
foreach(move "usr/etc:etc" "usr/lib/systemd:lib/systemd")
  string(REPLACE ":" ";" pair "${move}")
  list(GET pair 0 from)
  list(GET pair 1 to)
  if(NOT IS_DIRECTORY "${root}/${from}")
    message(FATAL_ERROR "layout.cmake: ${from} is not in the staged tree ${root}")
  endif()
  get_filename_component(parent "${root}/${to}" DIRECTORY)
  file(MAKE_DIRECTORY "${parent}")
  file(RENAME "${root}/${from}" "${root}/${to}")
endforeach()
