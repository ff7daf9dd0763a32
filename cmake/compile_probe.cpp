// Probe target: its include directories feed the compilation tests (see CMakeLists.txt).
