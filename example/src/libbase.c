/* libbase: the bottom of the example library stack. Two versions are built
   (1.0 and 2.0, sonames libbase.so.1 and libbase.so.2) so that one closure
   holds two versions of the same library. */
#include "libbase.h"

const char *libbase_version(void) { return LIBBASE_VERSION; }
