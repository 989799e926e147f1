/**
 * Request scripts on an egress listener: a Lua `envoy_on_request(request_handle)` run by a real
 * Lua VM (wasmoon, Lua 5.4 in WebAssembly) with the part of Envoy's Lua filter API that
 * header-routing scripts use (docs: envoy/docs/root/configuration/http/http_filters/lua_filter.rst):
 * `request_handle:headers():get/add/replace/remove`, `request_handle:logTrace/logDebug/logInfo/
 * logWarn/logErr/logCritical` (and the sandbox's `logError`), and `request_handle:respond(headers,
 * body)` for a local reply.
 *
 * How it is bounded, and why:
 * - The script sees only string, table, math and a few base functions (no io, os, require, load,
 *   debug, coroutine, getmetatable/setmetatable, raw*): it runs in an environment table of its own,
 *   and io, os and package are never opened in the VM.
 * - Every run (the top-level chunk at load, then each request) is a coroutine with a Lua count
 *   hook (`debug.sethook`) that raises an error after `maxInstructions` instructions. After the
 *   first overrun the hook fires on every instruction, so a `pcall` in the script cannot swallow
 *   the stop. Envoy runs its scripts as coroutines too; `respond()` yields, as in Envoy, so the
 *   script goes no further.
 * - The VM's memory is capped (`maxMemoryBytes`): an allocation past it is Lua's "not enough
 *   memory" error, not a process crash.
 * - Work inside one C function (a huge `string.rep`, a slow pattern in `string.find`) is not
 *   counted by the hook; the memory cap bounds the first, header sizes bound the second.
 *
 * The VM (wasmoon's WebAssembly module) is loaded only when a script is configured.
 */
import type { LuaEngine, LuaFactory, LuaLibraries } from 'wasmoon';
import { RevtunError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { RequestHeaders } from './request-headers.ts';

/** A reply the script makes itself (`request_handle:respond`); the request goes no further. */
export interface LocalReply {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

export interface RequestScript {
  /**
   * Runs the script on a request's headers, which it may change; a LocalReply ends the request.
   * Throws a RequestScriptError when the script fails (a Lua error, the instruction cap, the
   * memory cap); the headers it changed before failing stay changed.
   */
  onRequest(headers: RequestHeaders): LocalReply | undefined;
  close(): void;
}

export interface RequestScriptOptions {
  readonly inlineCode: string;
  /** Lua instructions one call may run before it is stopped with an error. */
  readonly maxInstructions: number;
  /** Most bytes the script's Lua VM may allocate (default 32 MiB). */
  readonly maxMemoryBytes?: number;
  readonly logger: Logger;
}

/** Why a script failed on a request. */
export type RequestScriptFailure = 'error' | 'instruction_limit';

/**
 * A script failed on a request. Envoy's Lua filter logs such an error, counts it
 * (`<stat_prefix>.lua.errors`) and lets the request continue; the egress listener decides.
 */
export class RequestScriptError extends Error {
  override readonly name = 'RequestScriptError';
  readonly reason: RequestScriptFailure;

  constructor(reason: RequestScriptFailure, message: string) {
    super(message);
    this.reason = reason;
  }
}

export const defaultMaxMemoryBytes = 32 * 1024 * 1024;

/**
 * Runs with the standard libraries this VM opened (base, coroutine, table, string, math, debug),
 * keeps what it needs in locals, and gives the script an environment with only the safe parts.
 * Returns the per-request runner, or a string that says why the script cannot run.
 */
const prelude = String.raw`
return function(js_get, js_add, js_replace, js_remove, js_log, js_reply_header, js_reply, code, max_instructions)
  local sethook = debug.sethook
  local cocreate, coresume, costatus, coyield = coroutine.create, coroutine.resume, coroutine.status, coroutine.yield
  local load, setmetatable, error, type, tostring, pairs = load, setmetatable, error, type, tostring, pairs

  -- Bytecode is not a thing a header script needs; without load it is useless anyway.
  string.dump = nil

  local env = {
    string = string, table = table, math = math,
    tostring = tostring, tonumber = tonumber, pairs = pairs, ipairs = ipairs, next = next,
    select = select, type = type, error = error, assert = assert, pcall = pcall,
  }
  env._G = env

  local limit_message = "the script ran more than " .. max_instructions .. " Lua instructions"
  local overrun = false
  local function on_count()
    overrun = true
    -- From now on every instruction fails, so a pcall in the script cannot carry on.
    sethook(on_count, "", 1)
    error(limit_message, 0)
  end

  local REPLY = {}

  local function describe(value)
    local kind = type(value)
    if kind == "string" or kind == "number" then return tostring(value) end
    return "an error value of type " .. kind
  end

  local function run(fn, argument)
    overrun = false
    local co = cocreate(fn)
    sethook(co, on_count, "", max_instructions)
    local ok, result = coresume(co, argument)
    if overrun then return "overrun" end
    if not ok then return "error:" .. describe(result) end
    if costatus(co) == "suspended" then
      if result == REPLY then return "reply" end
      return "error:the script yielded"
    end
    return "ok"
  end

  local function string_arg(what, value, level)
    local kind = type(value)
    if kind == "string" then return value end
    if kind == "number" then return tostring(value) end
    error(what .. " must be a string, not " .. kind, level + 1)
  end

  -- Methods are looked up in a table (fast); a miss names what revtun offers instead of Lua's
  -- "attempt to call a nil value".
  local function methods_of(object, offered)
    return setmetatable({}, {
      __index = function(_, key)
        error(object .. ":" .. tostring(key) .. "() is not supported by revtun; it offers " .. offered, 2)
      end,
    })
  end
  local function read_only(object)
    return function() error(object .. " is read-only", 2) end
  end

  local header_methods = methods_of("headers", "get, add, replace and remove")
  local headers = setmetatable({}, {
    __index = header_methods, __newindex = read_only("headers"), __metatable = "headers",
  })

  local function check_self(self, expected, call)
    if self ~= expected then error("call " .. call .. " with a colon", 3) end
  end

  function header_methods.get(self, name)
    check_self(self, headers, "headers:get(name)")
    return js_get(string_arg("headers:get(): the header name", name, 2))
  end
  function header_methods.add(self, name, value)
    check_self(self, headers, "headers:add(name, value)")
    local problem = js_add(string_arg("headers:add(): the header name", name, 2),
      string_arg("headers:add(): the header value", value, 2))
    if problem ~= nil then error("headers:add(): " .. problem, 2) end
  end
  function header_methods.replace(self, name, value)
    check_self(self, headers, "headers:replace(name, value)")
    local problem = js_replace(string_arg("headers:replace(): the header name", name, 2),
      string_arg("headers:replace(): the header value", value, 2))
    if problem ~= nil then error("headers:replace(): " .. problem, 2) end
  end
  function header_methods.remove(self, name)
    check_self(self, headers, "headers:remove(name)")
    js_remove(string_arg("headers:remove(): the header name", name, 2))
  end

  local handle_methods = methods_of("request_handle",
    "headers, respond, logTrace, logDebug, logInfo, logWarn, logErr (logError) and logCritical")
  local handle = setmetatable({}, {
    __index = handle_methods, __newindex = read_only("request_handle"), __metatable = "request_handle",
  })

  function handle_methods.headers(self)
    check_self(self, handle, "request_handle:headers()")
    return headers
  end

  local levels = {
    logTrace = "trace", logDebug = "debug", logInfo = "info", logWarn = "warn",
    logErr = "error", logError = "error", logCritical = "fatal",
  }
  for method, level in pairs(levels) do
    handle_methods[method] = function(self, message)
      check_self(self, handle, "request_handle:" .. method .. "(message)")
      js_log(level, string_arg("request_handle:" .. method .. "(): the message", message, 2))
    end
  end

  function handle_methods.respond(self, reply_headers, body)
    check_self(self, handle, "request_handle:respond(headers, body)")
    if type(reply_headers) ~= "table" then
      error("request_handle:respond(): the headers must be a table, e.g. {[\":status\"] = \"403\"}", 2)
    end
    if body ~= nil and type(body) ~= "string" then
      error("request_handle:respond(): the body must be a string, not " .. type(body), 2)
    end
    for name, value in pairs(reply_headers) do
      if type(name) ~= "string" then
        error("request_handle:respond(): header names must be strings, not " .. type(name), 2)
      end
      local problem = js_reply_header(name, string_arg("request_handle:respond(): the value of " .. name, value, 2))
      if problem ~= nil then error("request_handle:respond(): " .. problem, 2) end
    end
    js_reply(body or "")
    -- As in Envoy, respond() ends the script: the coroutine is never resumed.
    coyield(REPLY)
  end

  local chunk, problem = load(code, "=inline_code", "t", env)
  if chunk == nil then return "compile:" .. problem end
  local outcome = run(chunk)
  if outcome ~= "ok" then return "load:" .. outcome end
  local on_request = env.envoy_on_request
  if on_request == nil then return "no_on_request" end
  if type(on_request) ~= "function" then return "on_request_type:" .. type(on_request) end
  if env.envoy_on_response ~= nil then return "on_response" end
  -- Taken once, as Envoy takes a reference at load time.
  return function() return run(on_request, handle) end
end
`;

/** RFC 9110 token; the same set Node accepts as a header name. */
const headerNamePattern = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What Node accepts in a header value (lib/_http_common.js checkInvalidHeaderChar). */
const headerValuePattern = /^[\t\x20-\x7e\x80-\xff]*$/;

function headerProblem(name: string, value?: string): string | undefined {
  if (name.startsWith(':')) return `"${name}": revtun scripts cannot change pseudo-headers`;
  if (!headerNamePattern.test(name)) return `"${name}" is not a valid header name`;
  if (value !== undefined && !headerValuePattern.test(value)) {
    return `the value of "${name}" is not a valid header value (no CR, LF or NUL)`;
  }
  return undefined;
}

type LuaLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
const luaLevels = new Set<string>(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

interface Wasmoon {
  readonly factory: LuaFactory;
  /** The standard libraries a header script's VM opens (never io, os or package). */
  readonly libraries: readonly LuaLibraries[];
}

let wasmoonPromise: Promise<Wasmoon> | undefined;

/** wasmoon's module and its WebAssembly, loaded on first use and shared by every script. */
function loadWasmoon(): Promise<Wasmoon> {
  wasmoonPromise ??= import('wasmoon').then(
    ({ LuaFactory, LuaLibraries }) => ({
      factory: new LuaFactory(),
      libraries: [
        LuaLibraries.Base,
        LuaLibraries.Coroutine,
        LuaLibraries.Table,
        LuaLibraries.String,
        LuaLibraries.Math,
        LuaLibraries.Debug,
      ],
    }),
    (error: unknown) => {
      wasmoonPromise = undefined;
      throw error;
    },
  );
  return wasmoonPromise;
}

class LuaRequestScript implements RequestScript {
  readonly #engine: LuaEngine;
  readonly #logger: Logger;
  readonly #maxInstructions: number;
  #run: (() => unknown) | undefined;
  #headers: RequestHeaders | undefined;
  #replyHeaders: Record<string, string> = {};
  #replyStatus: number | undefined;
  #reply: LocalReply | undefined;
  #closed = false;

  constructor(engine: LuaEngine, logger: Logger, maxInstructions: number) {
    this.#engine = engine;
    this.#logger = logger;
    this.#maxInstructions = maxInstructions;
  }

  /** The functions the prelude calls. They return undefined (Lua nil), never null. */
  bridge(): Array<(...args: never[]) => string | undefined> {
    const current = (): RequestHeaders => {
      if (this.#headers === undefined) throw new Error('request_handle used outside a request');
      return this.#headers;
    };
    return [
      (name: string) => current().get(name),
      (name: string, value: string) => {
        const problem = headerProblem(name, value);
        if (problem === undefined) current().add(name, value);
        return problem;
      },
      (name: string, value: string) => {
        const problem = headerProblem(name, value);
        if (problem === undefined) current().replace(name, value);
        return problem;
      },
      (name: string) => {
        current().remove(name);
        return undefined;
      },
      (level: string, message: string) => {
        this.#logger[luaLevels.has(level) ? (level as LuaLevel) : 'info']({ lua: true }, message);
        return undefined;
      },
      (name: string, value: string) => {
        const key = name.toLowerCase();
        if (key === ':status') {
          const status = /^\d{3}$/.test(value.trim()) ? Number(value.trim()) : NaN;
          if (!(status >= 200 && status <= 599)) {
            return `":status" must be a status code from 200 to 599, not "${value}"`;
          }
          this.#replyStatus = status;
          return undefined;
        }
        const problem = headerProblem(key, value);
        if (problem === undefined) this.#replyHeaders[key] = value;
        return problem;
      },
      (body: string) => {
        this.#reply = {
          status: this.#replyStatus ?? 200,
          headers: this.#replyHeaders,
          body,
        };
        return undefined;
      },
    ];
  }

  attach(run: () => unknown): void {
    this.#run = run;
  }

  onRequest(headers: RequestHeaders): LocalReply | undefined {
    const run = this.#run;
    if (this.#closed || run === undefined) {
      throw new RequestScriptError('error', 'the request script is closed');
    }
    this.#headers = headers;
    this.#replyHeaders = {};
    this.#replyStatus = undefined;
    this.#reply = undefined;
    let outcome: unknown;
    try {
      outcome = run();
    } catch (error) {
      // Not a Lua error (those come back as an outcome): the VM itself failed.
      throw new RequestScriptError('error', `the request script failed: ${String(error)}`);
    } finally {
      this.#headers = undefined;
    }
    if (outcome === 'ok') return undefined;
    if (outcome === 'reply' && this.#reply !== undefined) return this.#reply;
    if (outcome === 'overrun') {
      throw new RequestScriptError(
        'instruction_limit',
        `the request script was stopped: it ran more than ${this.#maxInstructions} Lua instructions`,
      );
    }
    const text = String(outcome);
    throw new RequestScriptError(
      'error',
      `the request script failed: ${text.startsWith('error:') ? text.slice('error:'.length) : text}`,
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#run = undefined;
    this.#engine.global.close();
  }
}

function loadProblem(outcome: string, maxInstructions: number): string {
  if (outcome.startsWith('compile:')) {
    return `lua.inline_code does not compile: ${outcome.slice('compile:'.length)}`;
  }
  if (outcome === 'load:overrun') {
    return `lua.inline_code ran more than ${maxInstructions} Lua instructions while loading`;
  }
  if (outcome.startsWith('load:error:')) {
    return `lua.inline_code failed while loading: ${outcome.slice('load:error:'.length)}`;
  }
  if (outcome === 'no_on_request') {
    return 'lua.inline_code defines no function envoy_on_request(request_handle)';
  }
  if (outcome.startsWith('on_request_type:')) {
    return `lua.inline_code: envoy_on_request must be a function, not a ${outcome.slice('on_request_type:'.length)}`;
  }
  if (outcome === 'on_response') {
    return 'lua.inline_code defines envoy_on_response: revtun runs only envoy_on_request (responses are not scripted); remove it';
  }
  return `lua.inline_code cannot be loaded: ${outcome}`;
}

/**
 * Compiles a script and runs its top-level chunk once (bounded like a request). Fails with
 * ERR_CONFIG_INVALID, carrying Lua's message, when it does not compile, fails while loading,
 * defines no envoy_on_request or defines envoy_on_response.
 */
export async function loadRequestScript(options: RequestScriptOptions): Promise<RequestScript> {
  const { factory, libraries } = await loadWasmoon();
  const engine = await factory.createEngine({
    openStandardLibs: false,
    injectObjects: false,
    enableProxy: false,
    traceAllocations: true,
  });
  try {
    for (const library of libraries) engine.global.loadLibrary(library);
    engine.global.setMemoryMax(options.maxMemoryBytes ?? defaultMaxMemoryBytes);
    const script = new LuaRequestScript(engine, options.logger, options.maxInstructions);
    const setup = engine.doStringSync(prelude) as (...args: unknown[]) => unknown;
    const outcome = setup(...script.bridge(), options.inlineCode, options.maxInstructions);
    if (typeof outcome !== 'function') {
      throw new RevtunError(
        'ERR_CONFIG_INVALID',
        loadProblem(String(outcome), options.maxInstructions),
      );
    }
    script.attach(outcome as () => unknown);
    return script;
  } catch (error) {
    engine.global.close();
    throw error;
  }
}
