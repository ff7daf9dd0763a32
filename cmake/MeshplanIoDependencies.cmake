# Finds what meshplan::io needs beyond meshplan::core: nlohmann/json (header-only), which
# parses config.json files and safetensors headers.
#
# Used by meshplan's own build, where nlohmann/json is required, and by the installed
# meshplan-config.cmake, where it is looked for but required only by a project that asks
# for the io component: a project using meshplan::core alone does not need it. So this
# file only looks; whether nlohmann_json::nlohmann_json exists afterwards is the answer.
# Debian's nlohmann-json3-dev ships its CMake package; a bare copy of the headers (for
# instance the staged .device-deps prefix) has none, so we fall back to the header itself.
include_guard(GLOBAL)

if(NOT TARGET nlohmann_json::nlohmann_json)
  find_package(nlohmann_json 3 CONFIG QUIET)
endif()
if(NOT TARGET nlohmann_json::nlohmann_json)
  find_path(MESHPLAN_JSON_INCLUDE_DIR nlohmann/json.hpp)
  if(MESHPLAN_JSON_INCLUDE_DIR)
    add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
    set_target_properties(nlohmann_json::nlohmann_json PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${MESHPLAN_JSON_INCLUDE_DIR}")
  endif()
endif()
