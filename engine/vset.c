/* SPDX-License-Identifier: MIT */
/*
 * vset.c -- compact fingerprint sets and their slab heap; design in vset.h.
 *
 * Set invariant: vset_fits(n, cap), so at least one slot is empty and every
 * probe ends; each member is reachable from vset_home without crossing an
 * empty slot (probing wraps from cap - 1 to 0).
 *
 * Heap invariants: for each capacity c <= VSET_SLAB_MAX, the tables of
 * capacity c fill every page on cls[c]'s list except the tail, which holds
 * tail_n (1..per_page) of them in its first tail_n places; a page's
 * owner[i] is the id of the set whose slots are place i, and that set has
 * capacity c. Pages are VSET_PAGE-aligned, so a table's page is its
 * address rounded down.
 *
 * Under AddressSanitizer every place not holding a table, and every page
 * not in use but for its link, is poisoned, so a slots pointer kept across
 * a move (or a free) is reported when used. Tables sit back to back with
 * no redzone: an overflow into the next table in the page goes unseen.
 */
#include "engine/vset.h"
#include "engine/pool.h"

#if defined(__SANITIZE_ADDRESS__)
#define VSET_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VSET_ASAN 1
#endif
#endif

#ifdef VSET_ASAN
#include <sanitizer/asan_interface.h>
/* tables and page headers are 8-byte multiples at 8-aligned places: whole
 * shadow granules, so poisoning one never touches a neighbour */
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct vpage {
    struct vpage *prev;  /* the class's previous page, or the next free page */
    uint32_t owner[];    /* per_page ids, then the tables from `off` */
};

/* Region i's size: the pool's chunk schedule, 64 KiB doubling to 2 MiB. */
_Static_assert((POOL_CHUNK_MIN << 5) == POOL_CHUNK_MAX, "region_size stops at the largest chunk");
static size_t region_size(uint32_t i)
{
    return POOL_CHUNK_MIN << (i < 5 ? i : 5);
}

static uint64_t *place(const struct vclass *k, struct vpage *pg, uint32_t i, uint32_t cap)
{
    return (uint64_t *)((char *)pg + k->off) + (size_t)i * cap;
}

static void class_init(struct vclass *k, uint32_t cap)
{
    size_t bytes = (size_t)cap * sizeof(uint64_t);
    uint32_t n = (uint32_t)((VSET_PAGE - sizeof(struct vpage)) / (bytes + sizeof(uint32_t)));
    while (((sizeof(struct vpage) + n * sizeof(uint32_t) + 7) & ~(size_t)7) + n * bytes > VSET_PAGE)
        n--;
    k->per_page = n;
    k->off = (uint32_t)((sizeof(struct vpage) + n * sizeof(uint32_t) + 7) & ~(size_t)7);
}

void vheap_init(struct vheap *h, struct mem *m, vset_owner_fn owner, void *ud)
{
    memset(h, 0, sizeof(*h));
    h->m = m;
    h->owner = owner;
    h->ud = ud;
}

void vheap_release(struct vheap *h)
{
    for (uint32_t i = 0; i < h->nregions; i++) {
        UNPOISON(h->regions[i], region_size(i));  /* the addresses may come back as something else */
        mem_unmap(h->regions[i], region_size(i));
    }
    mem_sys_free(h->regions, (size_t)h->regions_cap * sizeof(void *));
    vheap_init(h, h->m, h->owner, h->ud);
}

/* A free page: recycled, or carved from the newest region (mapping the
 * next one, which counts as one more allocation for failure injection). */
static struct vpage *page_get(struct vheap *h)
{
    struct vpage *pg = h->free_pages;
    if (pg) {
        h->free_pages = pg->prev;
        return pg;  /* its link word stays unpoisoned */
    }
    if (h->cur == h->end) {
        if (mem_injected_failure(h->m))
            return NULL;
        if (h->nregions == h->regions_cap) {
            uint32_t nc = h->regions_cap ? h->regions_cap * 2 : 8;
            void **r = mem_sys_realloc(h->regions, (size_t)h->regions_cap * sizeof(void *),
                                       (size_t)nc * sizeof(void *));
            if (!r)
                return NULL;
            h->regions = r;
            h->regions_cap = nc;
        }
        size_t bytes = region_size(h->nregions);
        char *c = mem_map_ahead(h->m, bytes, pool_chunk_after(bytes));  /* 2 MiB-aligned: pages are VSET_PAGE-aligned */
        if (!c)
            return NULL;
        h->regions[h->nregions++] = c;
        h->region_bytes += bytes;
        h->cur = c;
        h->end = c + bytes;
        POISON(c, bytes);
    }
    pg = (struct vpage *)h->cur;
    h->cur += VSET_PAGE;
    UNPOISON(pg, sizeof(*pg));
    return pg;
}

/* A zeroed table of cap <= VSET_SLAB_MAX slots owned by `owner`. */
static uint64_t *slab_take(struct vheap *h, uint32_t cap, uint32_t owner)
{
    if (mem_injected_failure(h->m))
        return NULL;
    struct vclass *k = &h->cls[cap];
    if (!k->per_page)
        class_init(k, cap);
    if (!k->tail || k->tail_n == k->per_page) {
        struct vpage *pg = page_get(h);
        if (!pg)
            return NULL;
        UNPOISON(pg, k->off);
        pg->prev = k->tail;
        k->tail = pg;
        k->tail_n = 0;
    }
    uint32_t i = k->tail_n++;
    k->tail->owner[i] = owner;
    uint64_t *t = place(k, k->tail, i, cap);
    UNPOISON(t, (size_t)cap * sizeof(uint64_t));
    memset(t, 0, (size_t)cap * sizeof(uint64_t));
    h->m->bytes[MEM_VIEWERS] += (size_t)cap * sizeof(uint64_t);
    return t;
}

/* Frees a slab table: the class's last table moves into its place. */
static void slab_give(struct vheap *h, uint64_t *t, uint32_t cap)
{
    struct vclass *k = &h->cls[cap];
    struct vpage *pg = (struct vpage *)((uintptr_t)t & ~(uintptr_t)(VSET_PAGE - 1));
    uint32_t i = (uint32_t)(((char *)t - ((char *)pg + k->off)) / (cap * sizeof(uint64_t)));
    uint32_t li = k->tail_n - 1;
    uint64_t *last = place(k, k->tail, li, cap);
    if (last != t) {
        memcpy(t, last, (size_t)cap * sizeof(uint64_t));
        uint32_t o = k->tail->owner[li];
        pg->owner[i] = o;
        h->owner(h->ud, o)->slots = t;
    }
    POISON(last, (size_t)cap * sizeof(uint64_t));
    if (--k->tail_n == 0) {
        struct vpage *e = k->tail;
        k->tail = e->prev;
        k->tail_n = k->tail ? k->per_page : 0;
        e->prev = h->free_pages;
        h->free_pages = e;
        POISON((char *)e + sizeof(*e), VSET_PAGE - sizeof(*e));
    }
    h->m->bytes[MEM_VIEWERS] -= (size_t)cap * sizeof(uint64_t);
}

int64_t vheap_verify(const struct vheap *h, uint64_t owners)
{
    int64_t n = 0;
    for (uint32_t cap = 1; cap <= VSET_SLAB_MAX; cap++) {
        const struct vclass *k = &h->cls[cap];
        if (!k->tail)
            continue;
        if (k->tail_n == 0 || k->tail_n > k->per_page)
            return -1;
        uint32_t used = k->tail_n;
        for (struct vpage *pg = k->tail; pg; pg = pg->prev, used = k->per_page) {
            if ((uintptr_t)pg & (VSET_PAGE - 1))
                return -1;
            for (uint32_t i = 0; i < used; i++) {
                if (pg->owner[i] >= owners)
                    return -1;
                const struct vset *s = h->owner(h->ud, pg->owner[i]);
                if (s->cap != cap || s->slots != place(k, pg, i, cap))
                    return -1;
            }
            n += used;
        }
    }
    return n;
}

static uint64_t *table_alloc(struct vheap *h, uint64_t cap, uint32_t owner)
{
    if (cap <= VSET_SLAB_MAX)
        return slab_take(h, (uint32_t)cap, owner);
    return mem_pool_calloc(h->m, MEM_VIEWERS, (size_t)cap * sizeof(uint64_t));
}

static void table_free(struct vheap *h, uint64_t *t, uint32_t cap)
{
    if (!t)
        return;
    if (cap <= VSET_SLAB_MAX)
        slab_give(h, t, cap);
    else
        mem_pool_free(h->m, MEM_VIEWERS, t, (size_t)cap * sizeof(uint64_t));
}

/* ---- the set ------------------------------------------------------------------ */

static uint32_t find_slot(const uint64_t *slots, uint32_t cap, uint64_t key)
{
    uint32_t i = vset_home(key, cap);
    while (slots[i] != 0 && slots[i] != key)
        if (++i == cap)
            i = 0;
    return i;
}

bool vset_has(const struct vset *s, uint64_t fp)
{
    if (s->cap == 0)
        return false;
    uint64_t key = vset_key(fp);
    return s->slots[find_slot(s->slots, s->cap, key)] == key;
}

/* Steps of about 1/8: the table a set outgrows is reused at once (the
 * slabs), so a fuller table is what saves memory. At least min(cap, 4)
 * slots, though: each step copies and rehashes the table, and steps of
 * one slot did so for every member of a small set. */
static uint64_t grow_step(uint64_t c)
{
    uint64_t lo = c < VSET_GROW_MIN ? c : VSET_GROW_MIN;
    return c / VSET_GROW_DIV > lo ? c / VSET_GROW_DIV : lo;
}

uint64_t vset_grow_cap(uint64_t cap, uint64_t want)
{
    uint64_t c = cap + grow_step(cap);
    if (c < 2)
        c = 2;
    while (!vset_fits(want, c))
        c += grow_step(c);
    return c;
}

int vset_reserve(struct vset *s, struct vheap *h, uint32_t owner, uint32_t extra)
{
    uint64_t want = (uint64_t)s->n + extra;
    if (vset_fits(want, s->cap))
        return 0;
    if (!vset_fits(want, VSET_CAP_MAX))
        return -1;
    uint64_t cap = vset_grow_cap(s->cap, want);
    if (cap > VSET_CAP_MAX)
        cap = VSET_CAP_MAX;
    uint64_t *ns = table_alloc(h, cap, owner);
    if (!ns)
        return -1;
    for (uint32_t i = 0; i < s->cap; i++)
        if (s->slots[i] != 0)
            ns[find_slot(ns, (uint32_t)cap, s->slots[i])] = s->slots[i];
    table_free(h, s->slots, s->cap);
    s->slots = ns;
    s->cap = (uint32_t)cap;
    return 0;
}

bool vset_add(struct vset *s, uint64_t fp)
{
    uint64_t key = vset_key(fp);
    uint32_t i = find_slot(s->slots, s->cap, key);
    if (s->slots[i] == key)
        return false;
    s->slots[i] = key;
    s->n++;
    return true;
}

void vset_free(struct vset *s, struct vheap *h)
{
    table_free(h, s->slots, s->cap);
    s->slots = NULL;
    s->cap = 0;
    s->n = 0;
}

void vset_drop(struct vset *s, struct vheap *h)
{
    if (s->cap > VSET_SLAB_MAX)
        mem_pool_free(h->m, MEM_VIEWERS, s->slots, (size_t)s->cap * sizeof(uint64_t));
    else
        h->m->bytes[MEM_VIEWERS] -= (size_t)s->cap * sizeof(uint64_t);
    s->slots = NULL;
    s->cap = 0;
    s->n = 0;
}
