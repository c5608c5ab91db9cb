#ifndef GREET_H
#define GREET_H
/* greet_line returns a line naming the greeting read at run time from the
   greet-data store path and the libbase version in use, or NULL when the
   greeting file cannot be read. */
const char *greet_line(void);
#endif
