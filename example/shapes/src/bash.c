/* Stands in for an aarch64 bash: the host bash that cross-built scripts
 * name in their shebang. It only has to be a host program. */
#include <stdio.h>

int main(int argc, char **argv) {
	(void)argv;
	printf("bash 5.2p37 stand-in, %d arguments\n", argc - 1);
	return 0;
}
