import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { parse } from 'yaml';
import { isRevtunError } from '../shared/errors.ts';
import { RequestHeaders } from './request-headers.ts';
import {
  loadRequestScript,
  RequestScriptError,
  type RequestScript,
  type RequestScriptOptions,
} from './request-script.ts';

const repoRoot = path.join(import.meta.dirname, '..', '..');

/** The Lua script of Envoy's reverse-tunnel sandbox, from its responder config. */
function sandboxScript(): string {
  const file = path.join(repoRoot, 'test', 'fixtures', 'envoy', 'sandbox', 'responder-envoy.yaml');
  const bootstrap = parse(readFileSync(file, 'utf8')) as {
    static_resources: {
      listeners: Array<{
        filter_chains: Array<{
          filters: Array<{
            typed_config: { http_filters?: Array<{ typed_config: { inline_code?: string } }> };
          }>;
        }>;
      }>;
    };
  };
  for (const listener of bootstrap.static_resources.listeners) {
    for (const filter of listener.filter_chains[0]?.filters ?? []) {
      const code = filter.typed_config.http_filters?.[0]?.typed_config.inline_code;
      if (code !== undefined) return code;
    }
  }
  throw new Error(`${file} has no Lua filter`);
}

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly lua?: boolean;
}

/** A pino logger at trace level whose lines a test reads back. */
function capturingLogger() {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: 'trace', base: null, timestamp: false },
    { write: (line: string) => lines.push(JSON.parse(line) as LogLine) },
  );
  return { logger, lines };
}

/** Every script a test loads is closed after the file's tests. */
const loaded: RequestScript[] = [];
after(() => {
  for (const script of loaded) script.close();
});

async function load(
  inlineCode: string,
  options: Partial<RequestScriptOptions> = {},
): Promise<{ script: RequestScript; lines: LogLine[] }> {
  const { logger, lines } = capturingLogger();
  const script = await loadRequestScript({
    inlineCode,
    maxInstructions: 100_000,
    logger,
    ...options,
  });
  loaded.push(script);
  return { script, lines };
}

/** Loads `envoy_on_request` with `body` and runs it once on `headers`; returns what it logged. */
async function runOnce(
  body: string,
  headers: RequestHeaders = new RequestHeaders({}),
): Promise<{ reply: ReturnType<RequestScript['onRequest']>; logged: string[] }> {
  const { script, lines } = await load(`function envoy_on_request(request_handle)\n${body}\nend`);
  const reply = script.onRequest(headers);
  return { reply, logged: lines.map((line) => line.msg) };
}

describe("the sandbox's Lua script (responder-envoy.yaml)", () => {
  let script: RequestScript;
  let lines: LogLine[];

  before(async () => {
    ({ script, lines } = await load(sandboxScript(), { maxInstructions: 10_000_000 }));
  });

  it('sets x-computed-host-id from x-node-id and logs which header it used', () => {
    lines.length = 0;
    const headers = new RequestHeaders({ 'x-node-id': 'downstream-node' });
    assert.equal(script.onRequest(headers), undefined);
    assert.deepEqual(headers.toObject(), {
      'x-node-id': 'downstream-node',
      'x-computed-host-id': 'downstream-node',
    });
    assert.deepEqual(lines, [
      { level: 30, lua: true, msg: 'Using x-node-id as host_id: downstream-node' },
    ]);
  });

  it('prefers x-node-id when both headers are present', () => {
    const headers = new RequestHeaders({ 'x-node-id': 'n1', 'x-cluster-id': 'c1' });
    script.onRequest(headers);
    assert.equal(headers.get('x-computed-host-id'), 'n1');
  });

  it('falls back to x-cluster-id', () => {
    lines.length = 0;
    const headers = new RequestHeaders({ 'x-cluster-id': 'downstream-cluster' });
    script.onRequest(headers);
    assert.equal(headers.get('x-computed-host-id'), 'downstream-cluster');
    assert.deepEqual(lines, [
      { level: 30, lua: true, msg: 'Using x-cluster-id as host_id: downstream-cluster' },
    ]);
  });

  it('sets no x-computed-host-id without either header, and logs an error', () => {
    lines.length = 0;
    const headers = new RequestHeaders({ 'x-other': 'v' });
    assert.equal(script.onRequest(headers), undefined);
    assert.deepEqual(headers.toObject(), { 'x-other': 'v' });
    assert.deepEqual(lines, [
      { level: 50, lua: true, msg: 'No valid headers found: x-node-id or x-cluster-id' },
    ]);
  });

  it('runs many requests on one VM, each on its own headers', () => {
    for (let i = 0; i < 200; i += 1) {
      const headers = new RequestHeaders({ 'x-node-id': `n${i}` });
      script.onRequest(headers);
      assert.equal(headers.get('x-computed-host-id'), `n${i}`);
    }
  });
});

describe('headers:get/add/replace/remove follow Envoy (and RequestHeaders)', () => {
  it('get joins repeated headers with ", ", ignores case and gives nil for a missing one', async () => {
    const { logged } = await runOnce(
      `local h = request_handle:headers()
       request_handle:logInfo(h:get("x-multi"))
       request_handle:logInfo(h:get("X-Single"))
       request_handle:logInfo(tostring(h:get("x-missing")))`,
      new RequestHeaders({ 'x-multi': ['a', 'b'], 'x-single': 'one' }),
    );
    assert.deepEqual(logged, ['a, b', 'one', 'nil']);
  });

  it('add keeps the values already there; get then sees all of them', async () => {
    const headers = new RequestHeaders({ 'x-multi': ['a', 'b'] });
    const { logged } = await runOnce(
      `local h = request_handle:headers()
       h:add("x-multi", "c")
       h:add("X-New", "1")
       h:add("x-new", 2)
       request_handle:logInfo(h:get("x-multi"))
       request_handle:logInfo(h:get("x-new"))`,
      headers,
    );
    assert.deepEqual(logged, ['a, b, c', '1, 2']);
    assert.deepEqual(headers.toObject(), { 'x-multi': ['a', 'b', 'c'], 'x-new': ['1', '2'] });
  });

  it('replace sets one value, whether the header existed or not', async () => {
    const headers = new RequestHeaders({ 'x-multi': ['a', 'b'] });
    const { logged } = await runOnce(
      `local h = request_handle:headers()
       h:replace("x-multi", "z")
       h:replace("x-absent", "y")
       request_handle:logInfo(h:get("x-multi") .. " " .. h:get("x-absent"))`,
      headers,
    );
    assert.deepEqual(logged, ['z y']);
    assert.deepEqual(headers.toObject(), { 'x-multi': 'z', 'x-absent': 'y' });
  });

  it('remove drops every value; an add after it starts afresh', async () => {
    const headers = new RequestHeaders({ 'x-multi': ['a', 'b'], 'x-gone': 'g', keep: 'k' });
    const { logged } = await runOnce(
      `local h = request_handle:headers()
       h:remove("x-multi")
       h:remove("X-GONE")
       h:remove("x-never-there")
       request_handle:logInfo(tostring(h:get("x-multi")))
       h:add("x-multi", "new")
       request_handle:logInfo(h:get("x-multi"))`,
      headers,
    );
    assert.deepEqual(logged, ['nil', 'new']);
    assert.deepEqual(headers.toObject(), { keep: 'k', 'x-multi': 'new' });
  });

  it('rejects an invalid header name, a pseudo-header and a value with CR LF', async () => {
    for (const [call, message] of [
      ['h:add("bad name", "v")', 'headers:add(): "bad name" is not a valid header name'],
      [
        'h:replace(":path", "/x")',
        'headers:replace(): ":path": revtun scripts cannot change pseudo-headers',
      ],
      [
        'h:add("x-a", "v\\r\\nx-injected: 1")',
        'headers:add(): the value of x-a contains a control character (CR, LF, NUL ...)',
      ],
      ['h:add("x-a", {})', 'headers:add(): the value of x-a must be a string, not table'],
      ['h.get("x-a")', 'call headers:get(name) with a colon'],
    ]) {
      await assert.rejects(
        runOnce(`local h = request_handle:headers()\n${call}`),
        (error: unknown) =>
          error instanceof RequestScriptError &&
          error.reason === 'error' &&
          error.message === `the request script failed: inline_code:3: ${message}`,
        call,
      );
    }
  });
});

describe('request_handle:respond()', () => {
  it('makes a local reply with :status, the other headers and the body, and stops the script', async () => {
    const headers = new RequestHeaders({});
    const { reply } = await runOnce(
      `local h = request_handle:headers()
       h:add("x-before", "1")
       -- respond() ends the script even inside a pcall, as in Envoy (it yields).
       pcall(function()
         request_handle:respond({[":status"] = "403", ["X-Reason"] = "denied", ["x-n"] = 7}, "go away")
       end)
       h:add("x-after", "1")`,
      headers,
    );
    assert.deepEqual(reply, {
      status: 403,
      headers: { 'x-reason': 'denied', 'x-n': '7' },
      body: 'go away',
    });
    assert.deepEqual(headers.toObject(), { 'x-before': '1' });
  });

  it('defaults to status 200 and an empty body', async () => {
    const { reply } = await runOnce('request_handle:respond({})');
    assert.deepEqual(reply, { status: 200, headers: {}, body: '' });
  });

  it('rejects a status outside 200-599 and headers that are not a table', async () => {
    await assert.rejects(
      runOnce('request_handle:respond({[":status"] = "99"})'),
      /inline_code:2: request_handle:respond\(\): :status must be a status code from 200 to 599, not "99"$/,
    );
    await assert.rejects(
      runOnce('request_handle:respond("403")'),
      /inline_code:2: request_handle:respond\(\): the headers must be a table/,
    );
  });
});

describe('request_handle:log*()', () => {
  it("sends each level to the logger, marked lua: true (Envoy's levels; logError as logErr)", async () => {
    const { script, lines } = await load(`function envoy_on_request(request_handle)
      request_handle:logTrace("t")
      request_handle:logDebug("d")
      request_handle:logInfo("i")
      request_handle:logWarn("w")
      request_handle:logErr("e")
      request_handle:logError("e2")
      request_handle:logCritical("c")
      request_handle:logInfo(42)
      request_handle:logInfo("nul\\0byte")
    end`);
    script.onRequest(new RequestHeaders({}));
    assert.deepEqual(lines, [
      { level: 10, lua: true, msg: 't' },
      { level: 20, lua: true, msg: 'd' },
      { level: 30, lua: true, msg: 'i' },
      { level: 40, lua: true, msg: 'w' },
      { level: 50, lua: true, msg: 'e' },
      { level: 50, lua: true, msg: 'e2' },
      { level: 60, lua: true, msg: 'c' },
      { level: 30, lua: true, msg: '42' },
      { level: 30, lua: true, msg: 'nul\\0byte' },
    ]);
  });
});

describe('a failing script does not take the process down', () => {
  it('stops an infinite loop at the instruction cap, even one inside pcall, and runs again after', async () => {
    const { script } = await load(`
      calls = 0
      function envoy_on_request(request_handle)
        calls = calls + 1
        if request_handle:headers():get("x-loop") then
          while true do pcall(function() while true do end end) end
        end
        request_handle:headers():replace("x-calls", calls)
      end`);
    const looping = new RequestHeaders({ 'x-loop': '1' });
    assert.throws(
      () => script.onRequest(looping),
      (error: unknown) =>
        error instanceof RequestScriptError &&
        error.reason === 'instruction_limit' &&
        error.message ===
          'the request script was stopped: it ran more than 100000 Lua instructions',
    );
    const next = new RequestHeaders({});
    assert.equal(script.onRequest(next), undefined);
    assert.equal(next.get('x-calls'), '2');
  });

  it('turns a runtime error into a RequestScriptError naming the line, and runs again after', async () => {
    const { script } = await load(`function envoy_on_request(request_handle)
      local h = request_handle:headers()
      h:add("x-before", "1")
      if h:get("x-fail") then
        local t = nil
        return t.field
      end
    end`);
    const failing = new RequestHeaders({ 'x-fail': '1' });
    assert.throws(
      () => script.onRequest(failing),
      (error: unknown) =>
        error instanceof RequestScriptError &&
        error.reason === 'error' &&
        error.message ===
          "the request script failed: inline_code:6: attempt to index a nil value (local 't')",
    );
    // What it changed before the error stays changed (Envoy continues with those headers).
    assert.equal(failing.get('x-before'), '1');
    assert.equal(script.onRequest(new RequestHeaders({})), undefined);
  });

  it('reports error() with a non-string value by its type', async () => {
    await assert.rejects(
      runOnce('error({})'),
      /^RevtunError: the request script failed: an error value of type table$/,
    );
  });

  it('names the methods it offers when a script calls one revtun lacks', async () => {
    await assert.rejects(
      runOnce('request_handle:body()'),
      /inline_code:2: request_handle:body\(\) is not supported by revtun; it offers headers, respond, logTrace/,
    );
  });

  it('stops a script at the memory cap', async () => {
    const { script } = await load(
      `function envoy_on_request(request_handle)
        local t = {}
        for i = 1, 1e7 do t[i] = string.rep("x", 1000) .. i end
      end`,
      { maxInstructions: 1_000_000_000, maxMemoryBytes: 4 * 1024 * 1024 },
    );
    assert.throws(
      () => script.onRequest(new RequestHeaders({})),
      /^RevtunError: the request script failed: not enough memory$/,
    );
    assert.throws(
      () => script.onRequest(new RequestHeaders({})),
      /not enough memory/,
      'and again on the next request, without crashing',
    );
  });

  it('refuses to run after close()', async () => {
    const { script } = await load('function envoy_on_request(request_handle) end');
    script.close();
    assert.throws(() => script.onRequest(new RequestHeaders({})), /the request script is closed/);
  });
});

describe('loadRequestScript rejects a script that cannot run', () => {
  const cases: Array<[string, string, string]> = [
    [
      'a syntax error, with Lua’s message',
      'function envoy_on_request(request_handle)\n  if then\nend',
      "lua.inline_code does not compile: inline_code:2: unexpected symbol near 'then'",
    ],
    [
      'a script without envoy_on_request',
      'function on_request(request_handle) end',
      'lua.inline_code defines no function envoy_on_request(request_handle)',
    ],
    [
      'envoy_on_request that is not a function',
      'envoy_on_request = 1',
      'lua.inline_code: envoy_on_request must be a function, not a number',
    ],
    [
      'a script that defines envoy_on_response',
      'function envoy_on_request(h) end\nfunction envoy_on_response(h) end',
      'lua.inline_code defines envoy_on_response: revtun runs only envoy_on_request (responses are not scripted); remove it',
    ],
    [
      'a top-level error',
      'error("at load")',
      'lua.inline_code failed while loading: inline_code:1: at load',
    ],
    [
      'a top-level infinite loop',
      'while true do end',
      'lua.inline_code ran more than 100000 Lua instructions while loading',
    ],
  ];
  for (const [name, code, message] of cases) {
    it(name, async () => {
      await assert.rejects(
        load(code),
        (error: unknown) => isRevtunError(error, 'ERR_CONFIG_INVALID') && error.message === message,
      );
    });
  }
});

describe('the script sees only string, table, math and safe base functions', () => {
  it('has no io, os, require, load*, dofile, debug, coroutine, metatables or string.dump', async () => {
    const { logged } = await runOnce(
      `for _, name in ipairs({"io", "os", "require", "load", "loadfile", "loadstring", "dofile",
         "debug", "coroutine", "package", "getmetatable", "setmetatable", "rawget", "rawset",
         "collectgarbage", "print"}) do
         request_handle:logInfo(name .. "=" .. tostring(_G[name]))
       end
       request_handle:logInfo("string.dump=" .. tostring(string.dump))`,
    );
    assert.deepEqual(logged, [
      'io=nil',
      'os=nil',
      'require=nil',
      'load=nil',
      'loadfile=nil',
      'loadstring=nil',
      'dofile=nil',
      'debug=nil',
      'coroutine=nil',
      'package=nil',
      'getmetatable=nil',
      'setmetatable=nil',
      'rawget=nil',
      'rawset=nil',
      'collectgarbage=nil',
      'print=nil',
      'string.dump=nil',
    ]);
  });

  it('fails when a script reaches for os', async () => {
    await assert.rejects(
      runOnce('os.execute("touch /tmp/revtun-lua-was-here")'),
      /inline_code:2: attempt to index a nil value \(global 'os'\)/,
    );
  });

  it('has string, table, math and the listed base functions', async () => {
    const { logged } = await runOnce(
      `request_handle:logInfo(string.format("%s-%d", string.upper("a"), math.max(1, 2)) ..
         " " .. table.concat({"x", "y"}, ",") .. " " .. tostring(tonumber("7") + 1) ..
         " " .. type(pairs) .. type(ipairs) .. type(error) .. type(pcall) .. " " ..
         ("abc"):sub(2))`,
    );
    assert.deepEqual(logged, ['A-2 x,y 8 functionfunctionfunctionfunction bc']);
  });

  it('keeps its globals from one request to the next (as Envoy, per worker)', async () => {
    const { script, lines } = await load(`count = 0
      function envoy_on_request(request_handle)
        count = count + 1
        request_handle:logInfo(tostring(count))
      end`);
    script.onRequest(new RequestHeaders({}));
    script.onRequest(new RequestHeaders({}));
    assert.deepEqual(
      lines.map((line) => line.msg),
      ['1', '2'],
    );
  });
});
