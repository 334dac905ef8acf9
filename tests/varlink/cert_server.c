/*
 * org.varlink.certification served by proto/varlink.c, so that the
 * official certification client (varlink-go-certification --client) can
 * judge our server library the way it judges every Varlink binding. The
 * checks follow the reference servers (varlink/python's
 * test_certification.py is the most thorough): each client gets an id from
 * Start and must then call Test01 ... Test11 and End in that order, each
 * call carrying exactly the values the previous reply gave it. Any
 * deviation is answered with CertificationError {wants, got} (whole
 * messages) and ends that client's run, so End can only say all_ok after a
 * flawless one. This program tests the library; it holds nothing banger
 * needs.
 *
 * Usage: cert_server SOCKET_PATH. Prints "ready" once it listens; serves
 * until SIGTERM.
 */
#include <errno.h>
#include <event2/event.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "json.h"
#include "log.h"
#include "macro.h"
#include "varlink.h"

#define CERT_IFACE	      "org.varlink.certification."
#define CLIENT_ID_BYTES	      16
#define CLIENT_LIFETIME_SEC   (12 * 60 * 60) /* as long as the python reference keeps them */
#define MAX_CLIENTS	      1000	     /* beyond that, the oldest run is dropped */
#define TEST10_REPLIES	      10
#define CERT_MAX_MESSAGE_TEXT 4096

/* The interface definition, as the certification publishes it. */
static const char certification_description[] =
    "# Interface to test varlink implementations against.\n"
    "# First you write a varlink client calling:\n"
    "# Start, Test01, Test02, …, Test09, End\n"
    "# The return value of the previous call should be the argument of the next call.\n"
    "# Then you test this client against well known servers like python or rust from\n"
    "# https://github.com/varlink/\n"
    "#\n"
    "# Next you write a varlink server providing the same service as the well known ones.\n"
    "# Now run your client against it and run well known clients like python or rust\n"
    "# from https://github.com/varlink/ against your server. If all works out, then\n"
    "# your new language bindings should be varlink certified.\n"
    "interface org.varlink.certification\n"
    "\n"
    "type Interface (\n"
    "  foo: ?[]?[string](foo, bar, baz),\n"
    "  anon: (foo: bool, bar: bool)\n"
    ")\n"
    "\n"
    "type MyType (\n"
    "  object: object,\n"
    "  enum: (one, two, three),\n"
    "  struct: (first: int, second: string),\n"
    "  array: []string,\n"
    "  dictionary: [string]string,\n"
    "  stringset: [string](),\n"
    "  nullable: ?string,\n"
    "  nullable_array_struct: ?[](first: int, second: string),\n"
    "  interface: Interface\n"
    ")\n"
    "\n"
    "method Start() -> (client_id: string)\n"
    "\n"
    "method Test01(client_id: string) -> (bool: bool)\n"
    "\n"
    "method Test02(client_id: string, bool: bool) -> (int: int)\n"
    "\n"
    "method Test03(client_id: string, int: int) -> (float: float)\n"
    "\n"
    "method Test04(client_id: string, float: float) -> (string: string)\n"
    "\n"
    "method Test05(client_id: string, string: string) -> (\n"
    "  bool: bool,\n"
    "  int: int,\n"
    "  float: float,\n"
    "  string: string\n"
    ")\n"
    "\n"
    "method Test06(\n"
    "  client_id: string,\n"
    "  bool: bool,\n"
    "  int: int,\n"
    "  float: float,\n"
    "  string: string\n"
    ") -> (\n"
    "  struct: (\n"
    "    bool: bool,\n"
    "    int: int,\n"
    "    float: float,\n"
    "    string: string\n"
    "  )\n"
    ")\n"
    "\n"
    "method Test07(\n"
    "  client_id: string,\n"
    "  struct: (\n"
    "    bool: bool,\n"
    "    int: int,\n"
    "    float: float,\n"
    "    string: string\n"
    "  )\n"
    ") -> (map: [string]string)\n"
    "\n"
    "method Test08(client_id: string, map: [string]string) -> (set: [string]())\n"
    "\n"
    "method Test09(client_id: string, set: [string]()) -> (mytype: MyType)\n"
    "\n"
    "# returns more than one reply with \"continues\"\n"
    "method Test10(client_id: string, mytype: MyType) -> (string: string)\n"
    "\n"
    "method Test11(\n"
    "  client_id: string,\n"
    "  last_more_replies: []string\n"
    ") -> ()\n"
    "\n"
    "method End(client_id: string) -> (all_ok: bool)\n"
    "\n"
    "error ClientIdError ()\n"
    "\n"
    "error CertificationError (wants: object, got: object)\n";

/*
 * The MyType value Test09 returns and Test10 must get back. Optional
 * members (nullable, nullable_array_struct) are sent as null; a client may
 * return them as null or leave them out.
 */
#define MYTYPE_JSON                                                                                \
	"{\"object\":{\"method\":\"org.varlink.certification.Test09\","                            \
	"\"parameters\":{\"map\":{\"foo\":\"Foo\",\"bar\":\"Bar\"}}},"                             \
	"\"enum\":\"two\","                                                                        \
	"\"struct\":{\"first\":1,\"second\":\"2\"},"                                               \
	"\"array\":[\"one\",\"two\",\"three\"],"                                                   \
	"\"dictionary\":{\"foo\":\"Foo\",\"bar\":\"Bar\"},"                                        \
	"\"stringset\":{\"one\":{},\"two\":{},\"three\":{}},"                                      \
	"\"nullable\":null,"                                                                       \
	"\"nullable_array_struct\":null,"                                                          \
	"\"interface\":{\"foo\":[null,{\"foo\":\"foo\",\"bar\":\"bar\"},null,"                     \
	"{\"one\":\"foo\",\"two\":\"bar\"}],\"anon\":{\"foo\":true,\"bar\":false}}}"

/* math.pi as JSON: the shortest text that reads back as exactly M_PI. */
#define PI_JSON "3.141592653589793"

struct cert_client {
	char id[2 * CLIENT_ID_BYTES + 1];
	size_t next_step; /* index into cert_steps of the call expected next */
	time_t started;
	UT_hash_handle hh;
};

struct cert_server {
	struct cert_client *clients; /* uthash, in order of Start */
	size_t n_clients;
};

typedef void (*cert_reply_fn)(struct varlink_call *call);

/*
 * One step of a run: the method, the parameters it must carry apart from
 * client_id (JSON; null when it takes none), whether it must come with
 * "more" or "oneway", and how it answers.
 */
struct cert_step {
	const char *method;
	const char *wants_parameters;
	bool more;
	bool oneway;
	cert_reply_fn reply;
};

/* --- replies -------------------------------------------------------------------- */

/* Parse one of our own JSON constants; they are known good, so failure is a bug here. */
static yajl_val parse_constant(const char *text)
{
	char why[256];
	yajl_val v;
	if (json_parse(text, JSON_MAX_DEPTH, &v, why, sizeof(why)) < 0)
		fatalx(1, "cert_server: bad JSON constant (%s): %s", why, text);
	return v;
}

static void reply_test01(struct varlink_call *call)
{
	yajl_gen g = varlink_params_begin();
	json_gen_kv_bool(g, "bool", true);
	varlink_reply(call, varlink_params_end(g), false);
}

static void reply_test02(struct varlink_call *call)
{
	yajl_gen g = varlink_params_begin();
	json_gen_kv_int(g, "int", 1);
	varlink_reply(call, varlink_params_end(g), false);
}

static void reply_test03(struct varlink_call *call)
{
	yajl_gen g = varlink_params_begin();
	json_gen_string(g, "float");
	yajl_gen_double(g, 1.0);
	varlink_reply(call, varlink_params_end(g), false);
}

static void reply_test04(struct varlink_call *call)
{
	yajl_gen g = varlink_params_begin();
	json_gen_kv_string(g, "string", "ping");
	varlink_reply(call, varlink_params_end(g), false);
}

static void gen_four_values(yajl_gen g)
{
	json_gen_kv_bool(g, "bool", false);
	json_gen_kv_int(g, "int", 2);
	json_gen_string(g, "float");
	yajl_gen_double(g, M_PI);
	json_gen_kv_string(g, "string", "a lot of string");
}

static void reply_test05(struct varlink_call *call)
{
	yajl_gen g = varlink_params_begin();
	gen_four_values(g);
	varlink_reply(call, varlink_params_end(g), false);
}

static void reply_test06(struct varlink_call *call)
{
	yajl_gen g = varlink_params_begin();
	json_gen_string(g, "struct");
	yajl_gen_map_open(g);
	gen_four_values(g);
	yajl_gen_map_close(g);
	varlink_reply(call, varlink_params_end(g), false);
}

static void reply_test07(struct varlink_call *call)
{
	yajl_gen g = varlink_params_begin();
	json_gen_string(g, "map");
	yajl_gen_map_open(g);
	json_gen_kv_string(g, "foo", "Foo");
	json_gen_kv_string(g, "bar", "Bar");
	yajl_gen_map_close(g);
	varlink_reply(call, varlink_params_end(g), false);
}

static void reply_test08(struct varlink_call *call)
{
	static const char *const members[] = {"one", "two", "three"};
	yajl_gen g = varlink_params_begin();
	json_gen_string(g, "set");
	yajl_gen_map_open(g);
	for (size_t i = 0; i < ELEMENTSOF(members); i++) {
		json_gen_string(g, members[i]);
		yajl_gen_map_open(g);
		yajl_gen_map_close(g);
	}
	yajl_gen_map_close(g);
	varlink_reply(call, varlink_params_end(g), false);
}

static void reply_test09(struct varlink_call *call)
{
	_cleanup_(yajl_tree_freep) yajl_val mytype = parse_constant(MYTYPE_JSON);
	yajl_gen g = varlink_params_begin();
	json_gen_string(g, "mytype");
	json_gen_value(g, mytype);
	varlink_reply(call, varlink_params_end(g), false);
}

static void reply_test10(struct varlink_call *call)
{
	for (int i = 1; i <= TEST10_REPLIES; i++) {
		char text[32];
		snprintf(text, sizeof(text), "Reply number %d", i);
		yajl_gen g = varlink_params_begin();
		json_gen_kv_string(g, "string", text);
		varlink_reply(call, varlink_params_end(g), i < TEST10_REPLIES);
	}
}

static void reply_test11(struct varlink_call *call)
{
	varlink_reply(call, NULL, false); /* a oneway call: the library sends nothing */
}

static void reply_end(struct varlink_call *call)
{
	yajl_gen g = varlink_params_begin();
	json_gen_kv_bool(g, "all_ok", true);
	varlink_reply(call, varlink_params_end(g), false);
}

static const struct cert_step cert_steps[] = {
    {"Start", NULL, false, false, NULL}, /* answered by method_start */
    {"Test01", "{}", false, false, reply_test01},
    {"Test02", "{\"bool\":true}", false, false, reply_test02},
    {"Test03", "{\"int\":1}", false, false, reply_test03},
    {"Test04", "{\"float\":1.0}", false, false, reply_test04},
    {"Test05", "{\"string\":\"ping\"}", false, false, reply_test05},
    {"Test06", "{\"bool\":false,\"int\":2,\"float\":" PI_JSON ",\"string\":\"a lot of string\"}",
     false, false, reply_test06},
    {"Test07",
     "{\"struct\":{\"bool\":false,\"int\":2,\"float\":" PI_JSON ",\"string\":\"a lot of string\"}}",
     false, false, reply_test07},
    {"Test08", "{\"map\":{\"foo\":\"Foo\",\"bar\":\"Bar\"}}", false, false, reply_test08},
    {"Test09", "{\"set\":{\"one\":{},\"two\":{},\"three\":{}}}", false, false, reply_test09},
    {"Test10", "{\"mytype\":" MYTYPE_JSON "}", true, false, reply_test10},
    {"Test11",
     "{\"last_more_replies\":[\"Reply number 1\",\"Reply number 2\",\"Reply number 3\","
     "\"Reply number 4\",\"Reply number 5\",\"Reply number 6\",\"Reply number 7\","
     "\"Reply number 8\",\"Reply number 9\",\"Reply number 10\"]}",
     false, true, reply_test11},
    {"End", "{}", false, false, reply_end},
};

/* --- comparing what came with what should have ---------------------------------- */

static bool json_equal(yajl_val a, yajl_val b);

static size_t count_non_null(yajl_val obj)
{
	size_t n = 0;
	for (size_t i = 0; i < obj->u.object.len; i++)
		n += !YAJL_IS_NULL(obj->u.object.values[i]);
	return n;
}

/*
 * Objects are equal when their non-null members are: in Varlink an optional
 * member may be null or absent, and the order of members means nothing.
 */
static bool objects_equal(yajl_val a, yajl_val b)
{
	if (count_non_null(a) != count_non_null(b))
		return false;
	for (size_t i = 0; i < a->u.object.len; i++) {
		yajl_val av = a->u.object.values[i];
		if (YAJL_IS_NULL(av))
			continue;
		yajl_val bv = NULL;
		for (size_t k = 0; k < b->u.object.len && !bv; k++)
			if (strcmp(a->u.object.keys[i], b->u.object.keys[k]) == 0)
				bv = b->u.object.values[k];
		if (!bv || !json_equal(av, bv))
			return false;
	}
	return true;
}

/* Numbers are equal when their values are: 1, 1.0 and 1e0 are the same float. */
static bool numbers_equal(yajl_val a, yajl_val b)
{
	if (YAJL_IS_INTEGER(a) && YAJL_IS_INTEGER(b))
		return a->u.number.i == b->u.number.i;
	if (YAJL_IS_DOUBLE(a) && YAJL_IS_DOUBLE(b))
		return a->u.number.d == b->u.number.d;
	return false;
}

static bool json_equal(yajl_val a, yajl_val b)
{
	if (YAJL_IS_NUMBER(a) || YAJL_IS_NUMBER(b))
		return YAJL_IS_NUMBER(a) && YAJL_IS_NUMBER(b) && numbers_equal(a, b);
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case yajl_t_string:
		return strcmp(a->u.string, b->u.string) == 0;
	case yajl_t_object:
		return objects_equal(a, b);
	case yajl_t_array:
		if (a->u.array.len != b->u.array.len)
			return false;
		for (size_t i = 0; i < a->u.array.len; i++)
			if (!json_equal(a->u.array.values[i], b->u.array.values[i]))
				return false;
		return true;
	default: /* true, false, null: the type says it all */
		return true;
	}
}

/* The whole message {method, parameters, more, oneway} as JSON into g, the flags only when set. */
static void gen_message(yajl_gen g, const char *method, yajl_val parameters, bool more, bool oneway)
{
	yajl_gen_map_open(g);
	json_gen_kv_string(g, "method", method);
	if (parameters && parameters->u.object.len > 0) {
		json_gen_string(g, "parameters");
		json_gen_value(g, parameters);
	}
	if (more)
		json_gen_kv_bool(g, "more", true);
	if (oneway)
		json_gen_kv_bool(g, "oneway", true);
	yajl_gen_map_close(g);
}

static void reply_certification_error(struct varlink_call *call, const char *wants_method,
				      yajl_val wants, bool wants_more, bool wants_oneway,
				      yajl_val got)
{
	yajl_gen g = varlink_params_begin();
	json_gen_string(g, "wants");
	gen_message(g, wants_method, wants, wants_more, wants_oneway);
	json_gen_string(g, "got");
	gen_message(g, varlink_call_method(call), got, varlink_call_more(call),
		    varlink_call_oneway(call));
	varlink_error(call, CERT_IFACE "CertificationError", varlink_params_end(g));
}

/* Add the caller's client_id to the wanted parameters (the constants cannot know it). */
static int add_client_id(yajl_val parameters, const char *id)
{
	for (size_t i = 0; i < parameters->u.object.len; i++)
		if (strcmp(parameters->u.object.keys[i], "client_id") == 0)
			return -EEXIST;
	/* yajl allocates with malloc by default, so its tree may grow with realloc. */
	size_t n = parameters->u.object.len + 1;
	const char **keys = realloc(parameters->u.object.keys, n * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	parameters->u.object.keys = keys;
	yajl_val *values = realloc(parameters->u.object.values, n * sizeof(*values));
	if (!values)
		return -ENOMEM;
	parameters->u.object.values = values;
	yajl_val v = calloc(1, sizeof(*v));
	char *key = strdup("client_id");
	char *value = strdup(id);
	if (!v || !key || !value) {
		free(v);
		free(key);
		free(value);
		return -ENOMEM;
	}
	v->type = yajl_t_string;
	v->u.string = value;
	keys[n - 1] = key;
	values[n - 1] = v;
	parameters->u.object.len = n;
	return 0;
}

/* --- the client table ------------------------------------------------------------- */

static void client_remove(struct cert_server *cs, struct cert_client *client)
{
	HASH_DEL(cs->clients, client);
	cs->n_clients--;
	free(client);
}

/* Drop runs that were abandoned long ago, and the oldest when the table is full. */
static void clients_expire(struct cert_server *cs, time_t now)
{
	struct cert_client *client, *tmp;
	HASH_ITER(hh, cs->clients, client, tmp)
	if (now - client->started > CLIENT_LIFETIME_SEC || cs->n_clients >= MAX_CLIENTS)
		client_remove(cs, client);
}

static struct cert_client *client_find(struct cert_server *cs, yajl_val parameters)
{
	struct cert_client *client = NULL;
	const char *id;
	if (json_get_string(parameters, "client_id", &id) == 0)
		HASH_FIND_STR(cs->clients, id, client);
	return client;
}

/* --- methods ---------------------------------------------------------------------- */

static const struct cert_step *step_of(const char *method, size_t *index)
{
	const char *name = method + strlen(CERT_IFACE);
	for (size_t i = 0; i < ELEMENTSOF(cert_steps); i++)
		if (strcmp(cert_steps[i].method, name) == 0) {
			*index = i;
			return &cert_steps[i];
		}
	return NULL;
}

static void method_start(struct varlink_call *call, yajl_val parameters, void *userdata)
{
	struct cert_server *cs = userdata;
	unsigned char bytes[CLIENT_ID_BYTES];

	if (parameters->u.object.len > 0 || varlink_call_more(call) || varlink_call_oneway(call)) {
		reply_certification_error(call, CERT_IFACE "Start", NULL, false, false, parameters);
		return;
	}
	if (getrandom(bytes, sizeof(bytes), 0) != sizeof(bytes))
		fatal(1, "getrandom");
	struct cert_client *client = calloc(1, sizeof(*client));
	if (!client)
		fatalx(1, "out of memory");
	for (size_t i = 0; i < sizeof(bytes); i++)
		snprintf(client->id + 2 * i, 3, "%02x", bytes[i]);
	client->started = time(NULL);
	client->next_step = 1;
	clients_expire(cs, client->started);
	HASH_ADD_STR(cs->clients, id, client);
	cs->n_clients++;

	yajl_gen g = varlink_params_begin();
	json_gen_kv_string(g, "client_id", client->id);
	varlink_reply(call, varlink_params_end(g), false);
}

/* Test01 ... Test11 and End: the right client, the right order, exactly the right message. */
static void method_step(struct varlink_call *call, yajl_val parameters, void *userdata)
{
	struct cert_server *cs = userdata;
	size_t index = 0;
	const struct cert_step *step = step_of(varlink_call_method(call), &index);
	struct cert_client *client = client_find(cs, parameters);

	if (!step || !client) {
		varlink_error(call, CERT_IFACE "ClientIdError", NULL);
		return;
	}
	if (client->next_step != index) {
		char expected[64];
		snprintf(expected, sizeof(expected), CERT_IFACE "%s",
			 cert_steps[client->next_step].method);
		reply_certification_error(call, expected, NULL, false, false, NULL);
		return;
	}
	_cleanup_(yajl_tree_freep) yajl_val wants = parse_constant(step->wants_parameters);
	if (add_client_id(wants, client->id) < 0)
		fatalx(1, "out of memory");
	if (!json_equal(wants, parameters) || varlink_call_more(call) != step->more ||
	    varlink_call_oneway(call) != step->oneway) {
		client_remove(cs, client); /* this run failed; End must not say all_ok */
		reply_certification_error(call, varlink_call_method(call), wants, step->more,
					  step->oneway, parameters);
		return;
	}
	client->next_step = index + 1;
	if (index + 1 == ELEMENTSOF(cert_steps))
		client_remove(cs, client);
	step->reply(call);
}

static const struct varlink_method cert_methods[] = {
    {"Start", method_start, 0}, {"Test01", method_step, 0}, {"Test02", method_step, 0},
    {"Test03", method_step, 0}, {"Test04", method_step, 0}, {"Test05", method_step, 0},
    {"Test06", method_step, 0}, {"Test07", method_step, 0}, {"Test08", method_step, 0},
    {"Test09", method_step, 0}, {"Test10", method_step, 0}, {"Test11", method_step, 0},
    {"End", method_step, 0},
};

static const struct varlink_interface cert_interface = {
    .name = "org.varlink.certification",
    .description = certification_description,
    .methods = cert_methods,
    .n_methods = ELEMENTSOF(cert_methods),
};

/* --- main ------------------------------------------------------------------------- */

static int listen_on(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, SOMAXCONN) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
	static const struct varlink_server_info info = {
	    .vendor = "banger",
	    .product = "banger varlink certification server",
	    .version = "1",
	    .url = "https://varlink.org",
	};
	struct cert_server cs = {0};

	log_init("cert_server", LOG_LEVEL_INFO);
	if (argc != 2) {
		fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct event_base *base = event_base_new();
	if (!base)
		fatalx(1, "event_base_new failed");
	int fd = listen_on(argv[1]);
	if (fd < 0)
		fatalx(1, "listen on %s: %s", argv[1], strerror(-fd));
	struct varlink_server *server = varlink_server_new(base, &info, &cs);
	if (!server || varlink_server_add_interface(server, &cert_interface) < 0 ||
	    varlink_server_listen_fd(server, fd) < 0)
		fatalx(1, "cannot set up the varlink server");
	struct event *term = evsignal_new(base, SIGTERM, on_sigterm, base);
	if (!term || event_add(term, NULL) < 0)
		fatalx(1, "cannot watch SIGTERM");

	printf("ready\n");
	fflush(stdout);
	event_base_dispatch(base);

	varlink_server_free(server);
	event_free(term);
	event_base_free(base);
	unlink(argv[1]);
	struct cert_client *client, *tmp;
	HASH_ITER(hh, cs.clients, client, tmp)
	client_remove(&cs, client);
	return 0;
}
