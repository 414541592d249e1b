/*
 * pbuf.c -- protobuf-c allocators on mem_alloc (see pbuf.h).
 *
 * Arena layout: a singly linked list of chunks, newest first; each chunk is
 * a header followed by cap bytes, of which `off` are handed out. Requests
 * larger than a quarter chunk get a chunk of their own (inserted behind the
 * current one so the current chunk's free room is not wasted). Reset frees
 * every chunk but one regular one.
 */
#include "proto/pbuf.h"

#include "proto/mem.h"

#include <stdbool.h>
#include <stdint.h>

struct pbuf_chunk {
    pbuf_chunk *next;
    size_t cap; /* bytes after the header */
    size_t off; /* bytes handed out */
    max_align_t data[];
};

static void *
mem_pb_alloc(void *data, size_t len)
{
    (void) data;
    return mem_alloc(len == 0 ? 1 : len);
}

static void
mem_pb_free(void *data, void *p)
{
    (void) data;
    mem_free(p);
}

static ProtobufCAllocator mem_allocator = {
    .alloc = mem_pb_alloc,
    .free = mem_pb_free,
    .allocator_data = NULL,
};

ProtobufCAllocator *
pbuf_allocator(void)
{
    return &mem_allocator;
}

static pbuf_chunk *
chunk_new(size_t cap)
{
    if (cap > SIZE_MAX - sizeof(pbuf_chunk))
        return NULL; /* header + cap would wrap to a tiny allocation */
    pbuf_chunk *c = mem_alloc(sizeof(*c) + cap);
    if (c == NULL)
        return NULL;
    c->next = NULL;
    c->cap = cap;
    c->off = 0;
    return c;
}

static void *
arena_pb_alloc(void *data, size_t len)
{
    return pbuf_arena_alloc(data, len);
}

static void
arena_pb_free(void *data, void *p)
{
    (void) data;
    (void) p; /* released by pbuf_arena_reset */
}

void
pbuf_arena_init(pbuf_arena *a, size_t chunk_bytes)
{
    a->alloc.alloc = arena_pb_alloc;
    a->alloc.free = arena_pb_free;
    a->alloc.allocator_data = a;
    a->chunks = NULL;
    a->chunk_bytes = chunk_bytes < 256 ? 256 : chunk_bytes;
    a->used = 0;
}

void *
pbuf_arena_alloc(pbuf_arena *a, size_t len)
{
    size_t need = (len + 7u) & ~(size_t) 7u;
    if (need < len)
        return NULL; /* overflow */
    pbuf_chunk *c = a->chunks;
    if (c != NULL && c->cap - c->off >= need) {
        void *p = (uint8_t *) c->data + c->off;
        c->off += need;
        a->used += need;
        return p;
    }
    bool big = need > a->chunk_bytes / 4;
    pbuf_chunk *n = chunk_new(big ? need : a->chunk_bytes);
    if (n == NULL)
        return NULL;
    if (big && c != NULL) {
        n->next = c->next; /* keep the current chunk's free room in front */
        c->next = n;
    } else {
        n->next = c;
        a->chunks = n;
    }
    n->off = need;
    a->used += need;
    return n->data;
}

void
pbuf_arena_reset(pbuf_arena *a)
{
    pbuf_chunk *keep = NULL, *c = a->chunks;
    while (c != NULL) {
        pbuf_chunk *next = c->next;
        if (keep == NULL && c->cap == a->chunk_bytes) {
            keep = c;
            keep->off = 0;
            keep->next = NULL;
        } else {
            mem_free(c);
        }
        c = next;
    }
    a->chunks = keep;
    a->used = 0;
}

void
pbuf_arena_fini(pbuf_arena *a)
{
    pbuf_chunk *c = a->chunks;
    while (c != NULL) {
        pbuf_chunk *next = c->next;
        mem_free(c);
        c = next;
    }
    a->chunks = NULL;
    a->used = 0;
}
