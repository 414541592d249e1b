/*
 * slab.c -- size classes of SLAB_ALIGN bytes up to SLAB_MAX_OBJ.
 *
 * Class i serves objects of (i + 1) * SLAB_ALIGN bytes. A class owns a list
 * of pages; each page is a page header followed by PAGE_BYTES carved
 * lazily from a bump pointer, so untouched space costs no RSS. A freed
 * object holds the next pointer of the class's free list in its first 8
 * bytes (every object is at least 8 bytes and 8-aligned).
 *
 *   page:  | slab_page (16) | obj | obj | ... | obj | tail < obj size |
 *
 * Invariants, per class and under its mutex: every object is exactly one of
 * allocated, on the free list, or in [bump, end) of the newest page.
 * slab.bytes counts pages and large objects; it is atomic because it is
 * shared by all classes.
 *
 * Pages are never returned before slab_close: telling when a page is fully
 * free would need a per-object page lookup and per-page free lists. Memory
 * freed by deletes is reused by later entries of the same size class.
 *
 * Each class sits on its own cache lines (the slab is allocated 64-aligned),
 * so threads working on different sizes do not share lines.
 */
#include "storage/slab.h"

#include "proto/mem.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define PAGE_BYTES (64u * 1024u)
#define N_CLASSES  (SLAB_MAX_OBJ / SLAB_ALIGN)
#define CACHE_LINE 64u

typedef struct slab_page slab_page;
struct slab_page {
    slab_page *next; /* older page of the same class */
    void *pad;       /* keeps the first object 16-aligned */
};

typedef struct slab_class {
    alignas(CACHE_LINE) pthread_mutex_t mtx; /* guards the fields below */
    void *free;                              /* freed objects */
    uint8_t *bump;                           /* next uncarved byte */
    uint8_t *end;                            /* end of the newest page */
    slab_page *pages;                        /* newest first */
} slab_class;

struct slab {
    slab_class cls[N_CLASSES];
    _Atomic size_t bytes; /* see slab_bytes */
    void *raw;            /* what mem_alloc returned, for mem_free */
};

static size_t
class_of(size_t len)
{
    return len == 0 ? 0 : (len - 1) / SLAB_ALIGN;
}

shoal_err
slab_open(slab **out)
{
    *out = NULL;
    void *raw = mem_alloc(sizeof(slab) + CACHE_LINE);
    if (raw == NULL)
        return SHOAL_ENOMEM;
    uintptr_t a =
        ((uintptr_t) raw + CACHE_LINE - 1) & ~(uintptr_t) (CACHE_LINE - 1);
    slab *s = (slab *) a;
    for (size_t i = 0; i < N_CLASSES; i++) {
        slab_class *c = &s->cls[i];
        SH_ASSERT(pthread_mutex_init(&c->mtx, NULL) == 0);
        c->free = NULL;
        c->bump = c->end = NULL;
        c->pages = NULL;
    }
    atomic_init(&s->bytes, 0);
    s->raw = raw;
    *out = s;
    return SHOAL_OK;
}

void
slab_close(slab *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < N_CLASSES; i++) {
        slab_class *c = &s->cls[i];
        while (c->pages != NULL) {
            slab_page *pg = c->pages;
            c->pages = pg->next;
            mem_free(pg);
        }
        pthread_mutex_destroy(&c->mtx);
    }
    mem_free(s->raw);
}

/* Start a new page for class c; false when mem_alloc fails. The uncarved
 * tail of the previous page (less than one object) is abandoned. */
static bool
class_grow(slab *s, slab_class *c)
{
    slab_page *pg = mem_alloc(sizeof(slab_page) + PAGE_BYTES);
    if (pg == NULL)
        return false;
    pg->next = c->pages;
    c->pages = pg;
    c->bump = (uint8_t *) (pg + 1);
    c->end = c->bump + PAGE_BYTES;
    atomic_fetch_add_explicit(&s->bytes, sizeof(slab_page) + PAGE_BYTES,
                              memory_order_relaxed);
    return true;
}

static void *
class_alloc(slab *s, slab_class *c, size_t size)
{
    if (c->free != NULL) {
        void *p = c->free;
        c->free = *(void **) p;
        return p;
    }
    if ((size_t) (c->end - c->bump) < size && !class_grow(s, c))
        return NULL;
    void *p = c->bump;
    c->bump += size;
    return p;
}

void *
slab_alloc(slab *s, size_t len)
{
    if (len > SLAB_MAX_OBJ) {
        void *p = mem_alloc(len);
        if (p != NULL)
            atomic_fetch_add_explicit(&s->bytes, len, memory_order_relaxed);
        return p;
    }
    size_t i = class_of(len);
    slab_class *c = &s->cls[i];
    pthread_mutex_lock(&c->mtx);
    void *p = class_alloc(s, c, (i + 1) * SLAB_ALIGN);
    pthread_mutex_unlock(&c->mtx);
    return p;
}

void
slab_free(slab *s, void *p, size_t len)
{
    if (p == NULL)
        return;
    if (len > SLAB_MAX_OBJ) {
        mem_free(p);
        atomic_fetch_sub_explicit(&s->bytes, len, memory_order_relaxed);
        return;
    }
    slab_class *c = &s->cls[class_of(len)];
    pthread_mutex_lock(&c->mtx);
    *(void **) p = c->free;
    c->free = p;
    pthread_mutex_unlock(&c->mtx);
}

size_t
slab_bytes(const slab *s)
{
    return atomic_load_explicit(&s->bytes, memory_order_relaxed);
}
