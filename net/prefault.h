/* SPDX-License-Identifier: MIT */
/*
 * prefault.h -- faults the engine's fresh memory in on a background thread
 * (design in prefault.c). Used through eng_config.populate.
 */
#ifndef SHORTSTAT_NET_PREFAULT_H
#define SHORTSTAT_NET_PREFAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct net_prefault;

/* Starts the thread; NULL (with errno) when it cannot. */
struct net_prefault *net_prefault_start(void);
/* Stops and joins the thread; requests still queued are dropped. */
void net_prefault_stop(struct net_prefault *p);
/* Queue [addr, addr + len) to be faulted in; never blocks on the thread's
 * work, drops the request when the queue is full. Safe to call with p NULL. */
void net_prefault_request(struct net_prefault *p, void *addr, size_t len);
/* While paused the thread starts no new step (requests still queue);
 * pausing waits for the step in flight (one huge page at most), so from its
 * return until it is resumed the thread touches no memory. The server
 * pauses it for a snapshot: after fork() every page the parent
 * populates or writes is one more copy-on-write fault, and populating a
 * range the engine had already touched would copy all of it. */
void net_prefault_pause(struct net_prefault *p, bool paused);
/* Whether a starved step (one running RESCUE_MS, see prefault.c) is raised
 * to normal priority, so that a busy host cannot stall the loop behind it:
 * leaving SCHED_IDLE needs root or CAP_SYS_NICE. */
bool net_prefault_boosted(struct net_prefault *p);
/* Steps raised so far (INFO prefault_rescues). */
uint64_t net_prefault_rescues(struct net_prefault *p);
/* The rescuer's rule, pure: raise a step the loop waits on -- pausing the
 * thread, or blocked in the kernel (state 'D', the mmap lock) once the step
 * is rescue_ms old. A loop that is merely busy ('R') is not waiting. */
bool net_prefault_should_rescue(uint64_t age_ms, uint64_t rescue_ms, bool pausing,
                                char loop_state);
/* A thread of this process's state letter from /proc ('R', 'S', 'D', ...),
 * '?' when unreadable. */
char net_prefault_thread_state(pid_t tid);
/* Bytes faulted in, requests dropped (queue full or range gone). */
void net_prefault_stats(struct net_prefault *p, uint64_t *bytes, uint64_t *dropped);
/* Waits until the queue is empty and the thread idle (tests; not while paused). */
void net_prefault_drain(struct net_prefault *p);

#endif
