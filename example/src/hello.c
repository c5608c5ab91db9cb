#include <stdio.h>
#include <string.h>
#include "greet.h"

/* MESSAGE_FILE points into this package's own output, so reading it checks
   that self-references survive the rewrite. */
int main(void) {
	char text[128] = "";
	FILE *f = fopen(MESSAGE_FILE, "r");
	if (f == NULL) {
		fprintf(stderr, "hello: cannot open %s\n", MESSAGE_FILE);
		return 1;
	}
	if (fgets(text, sizeof text, f) == NULL)
		text[0] = '\0';
	fclose(f);
	text[strcspn(text, "\n")] = '\0';
	printf("hello 2.12: %s\n", text);
	const char *g = greet_line();
	if (g == NULL) {
		fprintf(stderr, "hello: libgreet cannot read its greeting\n");
		return 1;
	}
	printf("%s\n", g);
	return 0;
}
