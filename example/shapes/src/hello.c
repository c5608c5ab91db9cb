/* A C program whose run needs libgcc_s: pthread_exit unwinds the thread's
 * stack, and glibc dlopens libgcc_s.so.1 for that (from its trusted
 * directories, or its own RUNPATH), aborting the process if it cannot. */
#include <pthread.h>
#include <stdio.h>

static void *worker(void *arg) {
	(void)arg;
	pthread_exit("unwound by libgcc_s");
	return NULL;
}

int main(void) {
	pthread_t t;
	void *ret;
	if (pthread_create(&t, NULL, worker, NULL) != 0 || pthread_join(t, &ret) != 0) {
		fprintf(stderr, "hello: thread failed\n");
		return 1;
	}
	printf("hello 2.12.1: thread exited, %s\n", (const char *)ret);
	return 0;
}
