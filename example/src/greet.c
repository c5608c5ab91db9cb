#include <stdio.h>
#include <string.h>
#include "greet.h"
#include "libbase.h"

/* GREETING_FILE is an absolute store path compiled into the library, so the
   string is a store reference that a rewrite must get right for the read
   below to succeed. */
const char *greet_line(void) {
	static char line[256];
	char text[128] = "";
	FILE *f = fopen(GREETING_FILE, "r");
	if (f == NULL)
		return NULL;
	if (fgets(text, sizeof text, f) == NULL)
		text[0] = '\0';
	fclose(f);
	text[strcspn(text, "\n")] = '\0';
	snprintf(line, sizeof line, "libgreet: %s (libbase %s)", text, libbase_version());
	return line;
}
