# Finds what meshplan::core needs: Boost.Hana (header-only). meshplan::io's nlohmann/json
# is found by MeshplanIoDependencies.cmake.
#
# Used by meshplan's own build and by the installed meshplan-config.cmake, so a
# consumer resolves the dependency the same way meshplan did. Debian's libboost-dev
# ships BoostConfig.cmake; a bare copy of the headers (for instance the staged
# .device-deps prefix) has no CMake package, so we fall back to the header itself.
include_guard(GLOBAL)

if(NOT TARGET Boost::headers)
  find_package(Boost 1.71 CONFIG QUIET)
endif()

if(NOT TARGET Boost::headers)
  find_path(MESHPLAN_HANA_INCLUDE_DIR boost/hana.hpp)
  if(NOT MESHPLAN_HANA_INCLUDE_DIR)
    message(FATAL_ERROR
      "meshplan needs Boost.Hana (boost/hana.hpp). On Debian: apt-get install libboost-dev; "
      "elsewhere add the prefix that holds include/boost/hana.hpp to CMAKE_PREFIX_PATH.")
  endif()
  add_library(Boost::headers INTERFACE IMPORTED)
  set_target_properties(Boost::headers PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${MESHPLAN_HANA_INCLUDE_DIR}")
endif()
