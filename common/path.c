/* See path.h. */
#include "path.h"

#include <errno.h>
#include <string.h>

bool path_is_normal_absolute(const char *path)
{
	if (path[0] != '/')
		return false;
	if (path[1] == '\0')
		return true;
	for (const char *p = path; *p != '\0';) {
		/* p points at a '/' that starts a component. */
		const char *component = p + 1;
		const char *end = strchrnul(component, '/');
		size_t len = (size_t)(end - component);
		if (len == 0)
			return false; /* "//" or a trailing slash */
		if (len == 1 && component[0] == '.')
			return false;
		if (len == 2 && component[0] == '.' && component[1] == '.')
			return false;
		p = end;
	}
	return true;
}

bool path_is_under(const char *path, const char *root)
{
	if (!path_is_normal_absolute(path) || !path_is_normal_absolute(root))
		return false;
	if (strcmp(root, "/") == 0)
		return true;
	size_t n = strlen(root);
	return strncmp(path, root, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

const char *path_basename(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

bool bytes_are_zero(const void *buf, size_t size)
{
	const unsigned char *b = buf;
	for (size_t i = 0; i < size; i++)
		if (b[i] != 0)
			return false;
	return true;
}

bool field_is_clean_string(const char *field, size_t size)
{
	const char *nul = memchr(field, '\0', size);
	if (!nul)
		return false;
	size_t used = (size_t)(nul - field);
	return bytes_are_zero(nul, size - used);
}

int field_set(char *field, size_t size, const char *value)
{
	size_t len = strlen(value);
	if (len >= size)
		return -ENAMETOOLONG;
	memcpy(field, value, len);
	memset(field + len, 0, size - len);
	return 0;
}
