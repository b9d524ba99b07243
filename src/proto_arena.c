/*
 * proto_arena.c - Jansson's allocator while a decode runs: a bump arena
 * lent from the decoding frame's stack (proto_arena_enter/leave, used by
 * proto_decode.c). proto_init() installs it.
 *
 * Jansson allocates every value, key and string of a parse separately, and
 * malloc/free were half the cost of a message. While a decode runs, its
 * allocations come from a bump arena on that decode's own stack instead;
 * freeing them is a no-op and the arena vanishes when the decode returns,
 * after every Jansson object of it was released. What does not fit (big
 * messages) falls back to malloc.
 */
#include "proto_int.h"

#include <stdlib.h>

static _Thread_local struct proto_arena *arena;

static void *arena_malloc(size_t n)
{
	struct proto_arena *a = arena;

	n = (n + 15) & ~(size_t)15;
	if (a && n <= a->cap - a->used) {
		void *p = a->base + a->used;

		a->used += n;
		return p;
	}
	return malloc(n);
}

static void arena_free(void *p)
{
	struct proto_arena *a = arena;

	if (a && (char *)p >= a->base && (char *)p < a->base + a->cap)
		return;   /* released with the arena */
	free(p);
}

void proto_init(void)
{
	json_set_alloc_funcs(arena_malloc, arena_free);
}

void proto_arena_enter(struct proto_arena *a, void *mem, size_t cap)
{
	a->base = mem;
	a->used = 0;
	a->cap = cap;
	a->outer = arena;
	arena = a;
}

void proto_arena_leave(struct proto_arena *a)
{
	arena = a->outer;
}
