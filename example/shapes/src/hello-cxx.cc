// A C++ program that throws and catches an exception: libstdc++ and the
// unwinder in libgcc_s, both from the compiler's lib output.
#include <iostream>
#include <stdexcept>
#include <string>

static int depth(int n) {
	if (n == 0) {
		throw std::runtime_error("thrown 3 frames deep");
	}
	return depth(n - 1) + 1;
}

int main() {
	try {
		depth(3);
	} catch (const std::exception &e) {
		std::cout << "hello-cxx 1.0: caught " << e.what() << std::endl;
		return 0;
	}
	std::cerr << "hello-cxx: no exception" << std::endl;
	return 1;
}
