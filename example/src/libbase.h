#ifndef LIBBASE_H
#define LIBBASE_H
const char *libbase_version(void);
#endif
