/**
 * A scriptable external CNI plugin for tests, in the spirit of libcni's `noop`
 * test plugin. It is run through a wrapper file named after the plugin type
 * (see `helpers.ts`); beside the wrapper, `<wrapper>.json` says what to do per
 * verb, and every call of any fake in the directory is appended to `calls.log`
 * there as one JSON line: `{"verb", "type", "env": {CNI_*}, "stdin": <config>}`.
 *
 * Per verb the control file may give `result` (printed as is), `error`
 * (`{code, msg, details}` printed, exit 1), `exit` with raw `stdout`, and
 * `sleepMs`. With nothing given, ADD passes prevResult on with one interface
 * named after the plugin added (or a fresh result when there is none).
 */
const wrapper = Deno.args[0];
const type = wrapper.slice(wrapper.lastIndexOf("/") + 1);
const verb = Deno.env.get("CNI_COMMAND") ?? "";
const stdinText = new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer());
let stdin: Record<string, unknown> = {};
try {
  stdin = JSON.parse(stdinText);
} catch {
  stdin = { unparsable: stdinText };
}
const env: Record<string, string> = {};
for (const [k, v] of Object.entries(Deno.env.toObject())) if (k.startsWith("CNI_")) env[k] = v;
Deno.writeTextFileSync(
  `${wrapper.slice(0, wrapper.lastIndexOf("/"))}/calls.log`,
  JSON.stringify({ verb, type, env, stdin }) + "\n",
  { append: true },
);

let control: Record<string, Record<string, unknown>> = {};
try {
  control = JSON.parse(Deno.readTextFileSync(`${wrapper}.json`));
} catch {
  // No control file: default behaviour for every verb.
}
const todo = control[verb] ?? {};
if (typeof todo.sleepMs === "number") {
  await new Promise((r) => setTimeout(r, todo.sleepMs as number));
}
const print = (value: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value)));
if (todo.error) {
  print({ cniVersion: stdin.cniVersion, ...(todo.error as object) });
  Deno.exit(1);
}
if (typeof todo.exit === "number") {
  if (typeof todo.stdout === "string") Deno.stdout.writeSync(new TextEncoder().encode(todo.stdout));
  Deno.exit(todo.exit);
}
if (todo.result) {
  print(todo.result);
} else if (verb === "ADD") {
  const version = String(stdin.cniVersion ?? "0.1.0");
  const prev = stdin.prevResult as Record<string, unknown> | undefined;
  if (version.startsWith("0.1") || version.startsWith("0.2")) {
    print(prev ?? { cniVersion: version, ip4: { ip: "10.99.0.2/24" } });
  } else {
    const interfaces = [...((prev?.interfaces as unknown[]) ?? []), { name: type }];
    print({ ...(prev ?? { cniVersion: version }), cniVersion: version, interfaces });
  }
} else if (verb === "VERSION") {
  print({
    cniVersion: stdin.cniVersion ?? "1.1.0",
    supportedVersions: ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
  });
}
