// The URL-import promise: a user can import mod.ts from an HTTP URL with no config file, no
// lock file and no import map. This test serves the repository over loopback HTTP and runs a
// tiny program in a fresh `deno run --no-config` subprocess that imports it from there.
//
// It needs net (127.0.0.1), run and read, which `deno test -P` grants from deno.json's default
// permission set; under a plain `deno test` it is ignored rather than failed.
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

function granted(descriptor: Deno.PermissionDescriptor): boolean {
  return Deno.permissions.querySync(descriptor).state === "granted";
}

const missingPermissions = !granted({ name: "net", host: "127.0.0.1" }) ||
  !granted({ name: "run" }) ||
  !granted({ name: "read", path: ROOT });

/** Serves the repository's .ts files; 404 for anything else, 403 for paths with "..". */
function serveRepository(served: string[]): (request: Request) => Promise<Response> {
  return async (request) => {
    let path: string;
    try {
      path = decodeURIComponent(new URL(request.url).pathname);
    } catch {
      return new Response("bad path\n", { status: 400 });
    }
    if (path.split(/[\\/]/).includes("..") || path.includes("\0")) {
      return new Response("forbidden\n", { status: 403 });
    }
    if (request.method !== "GET" || !path.endsWith(".ts")) {
      return new Response("not found\n", { status: 404 });
    }
    const file = new URL(`.${path}`, ROOT);
    if (!file.href.startsWith(ROOT.href)) return new Response("forbidden\n", { status: 403 });
    try {
      const body = await Deno.readFile(file);
      served.push(path);
      return new Response(body, { headers: { "content-type": "application/typescript" } });
    } catch {
      return new Response("not found\n", { status: 404 });
    }
  };
}

Deno.test({
  name: "mod.ts imports from a loopback URL with --no-config (needs deno test -P)",
  ignore: missingPermissions,
  async fn() {
    const served: string[] = [];
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      serveRepository(served),
    );
    const origin = `http://127.0.0.1:${server.addr.port}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 60_000);
    try {
      // The server refuses to leave the repository and serves only .ts files.
      assert.equal((await fetch(`${origin}/deno.json`).then(drain)).status, 404);
      assert.equal((await fetch(`${origin}/nope.ts`).then(drain)).status, 404);
      assert.equal((await fetch(`${origin}/src/..%2F..%2Fmod.ts`).then(drain)).status, 403);

      const script = `
        import { runProgram, sliceTopology } from "${origin}/mod.ts";
        const result = runProgram(sliceTopology("v3-8"), function* (core) {
          yield* core.compute({ flops: 61.5e9 });
        });
        console.log(JSON.stringify({
          status: result.status,
          simulatedSeconds: result.simulatedSeconds,
        }));
      `;
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-config",
          "--no-lock",
          "--quiet",
          `--allow-import=127.0.0.1:${server.addr.port}`,
          "--allow-net=127.0.0.1",
          "--ext=ts",
          "-",
        ],
        env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        signal: controller.signal,
      }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(script));
      await writer.close();
      const { code, stdout, stderr } = await child.output();
      const out = new TextDecoder().decode(stdout).trim();
      const err = new TextDecoder().decode(stderr).trim();
      assert.equal(code, 0, `subprocess exited with ${code}\nstdout: ${out}\nstderr: ${err}`);
      const lines = out.split("\n");
      const result = JSON.parse(lines[lines.length - 1]);
      assert.equal(result.status, "completed");
      // 61.5 GFLOP on a 61.5 TFLOP/s core takes one millisecond.
      assert.ok(
        Math.abs(result.simulatedSeconds - 0.001) < 1e-12,
        `simulatedSeconds ${result.simulatedSeconds}`,
      );
      // The modules came over HTTP from this server, including the file that imports xstate.
      assert.ok(served.includes("/mod.ts"), `served: ${served.join(", ")}`);
      assert.ok(served.includes("/src/_xstate.ts"), `served: ${served.join(", ")}`);
    } finally {
      clearTimeout(timer);
      await server.shutdown();
      await server.finished;
    }
  },
});

async function drain(response: Response): Promise<Response> {
  await response.body?.cancel();
  return response;
}
