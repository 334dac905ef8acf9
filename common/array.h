/*
 * Arrays that grow by doubling: the one place that computes a new capacity,
 * so that its overflow check is written once. Allocates; never logs.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/*
 * Make room for need elements of size bytes in *array_ptr (a T **, as freep() takes it),
 * which holds *capacity of them: doubling from first_capacity (> 0) as often as it takes.
 * 0, or -ENOMEM with the array and *capacity untouched.
 */
static inline int grow_array(void *array_ptr, size_t *capacity, size_t need, size_t size,
			     size_t first_capacity)
{
	void **array = array_ptr;
	if (need <= *capacity)
		return 0;
	size_t cap = *capacity ? *capacity : first_capacity;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * cap;
	void *grown = cap <= SIZE_MAX / size ? realloc(*array, cap * size) : NULL;
	if (!grown)
		return -ENOMEM;
	*array = grown;
	*capacity = cap;
	return 0;
}
