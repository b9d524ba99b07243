/*
 * stack.c - gives back the unused part of a thread's stack (see stack.h).
 *
 * Everything below the stack pointer is dead by the ABI (past the 128-byte
 * red zone), so the pages wholly below the caller's frame, less a margin
 * for madvise's own call, can be dropped with MADV_DONTNEED: the kernel
 * frees them and hands out zeroed pages if the thread goes that deep again.
 * Only the calling thread uses its stack, so no other thread is involved.
 */
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stack.h"

/* Left in place below the caller's frame: stack_trim's frame, madvise's,
 * the red zone. */
#define STACK_MARGIN 512

/* The lowest address of this thread's stack; 0 until known, 1 if unknown. */
static _Thread_local uintptr_t stack_low;

/* The bounds of the calling thread's stack, once per thread. Returns 0 or
 * -1 (the main thread, whose stack grows on demand, is left alone). */
static int stack_bounds(uintptr_t *low)
{
	pthread_attr_t attr;
	void *addr;
	size_t size;

	if (stack_low == 0) {
		stack_low = 1;
		if (getpid() != gettid() && pthread_getattr_np(pthread_self(), &attr) == 0) {
			if (pthread_attr_getstack(&attr, &addr, &size) == 0)
				stack_low = (uintptr_t)addr;
			pthread_attr_destroy(&attr);
		}
	}
	*low = stack_low;
	return stack_low > 1 ? 0 : -1;
}

void __attribute__((noinline)) stack_trim(void)
{
	volatile char here = 0;   /* at the bottom of this frame, give or take */
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), low, keep;

	if (stack_bounds(&low) < 0)
		return;
	keep = ((uintptr_t)&here - STACK_MARGIN) & ~(page - 1);
	if (keep > low)
		(void)madvise((void *)low, keep - low, MADV_DONTNEED);
}
