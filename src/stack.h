/*
 * stack.h - giving back the stack pages a thread no longer uses.
 *
 * A CivetWeb worker serves one websocket for the connection's whole life,
 * and the kernel keeps every stack page a thread ever touched. A reader
 * goes deepest early (the upgrade, then the handshake: Jansson and a log
 * line under it) and then waits, much higher up, for the rest of the
 * connection's life; with 10,000 idle mods every page it keeps is 40 MB.
 */
#ifndef GW_STACK_H
#define GW_STACK_H

/* Returns to the kernel the pages of the calling thread's stack below the
 * caller's frame (they read as zeros if touched again). One madvise call;
 * does nothing on the main thread or if the stack's bounds are unknown.
 * Thread-safe: it only touches the caller's own stack. */
void stack_trim(void);

#endif
