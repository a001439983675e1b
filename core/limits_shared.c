#include "limits_shared.h"


void limits_shared_init(struct limits_shared *s, const struct limits *lim)
{
	pthread_mutex_init(&s->lock, NULL);
	s->current = *lim;
	atomic_init(&s->version, 1);
}


void limits_shared_set(struct limits_shared *s, const struct limits *lim)
{
	pthread_mutex_lock(&s->lock);
	s->current = *lim;
	atomic_fetch_add(&s->version, 1);
	pthread_mutex_unlock(&s->lock);
}


int limits_shared_refresh(struct limits_shared *s, unsigned *version,
			  struct limits *out)
{
	if (atomic_load(&s->version) == *version)
		return 0;
	pthread_mutex_lock(&s->lock);
	*out = s->current;
	*version = atomic_load(&s->version);
	pthread_mutex_unlock(&s->lock);
	return 1;
}


void limits_shared_destroy(struct limits_shared *s)
{
	pthread_mutex_destroy(&s->lock);
}
