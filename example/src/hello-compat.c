#include <stdio.h>
#include "libbase.h"

int main(void) {
	printf("hello-compat: libbase %s\n", libbase_version());
	return 0;
}
