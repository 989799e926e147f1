/**
 * Request scripts on an egress listener: a Lua `envoy_on_request(request_handle)` run by a real
 * Lua VM (wasmoon, Lua 5.4 in WebAssembly) with the part of Envoy's Lua filter API that
 * header-routing scripts use (docs: envoy/docs/root/configuration/http/http_filters/lua_filter.rst):
 * `request_handle:headers():get/add/replace/remove`, `request_handle:logTrace/logDebug/logInfo/
 * logWarn/logErr/logCritical` (and the sandbox's `logError`), and `request_handle:respond(headers,
 * body)` for a local reply.
 *
 * One crossing per request. Each call into or out of wasmoon costs microseconds (its glue checks
 * every C API call), so the script never calls JavaScript: the request's headers go in as one
 * string, the script reads and changes a Lua view of them, and the changes, log lines and any
 * local reply come back as the call's results, which are then applied in order.
 *
 * How it is bounded, and why:
 * - The script sees only string, table, math and a few base functions (no io, os, require, load,
 *   debug, coroutine, getmetatable/setmetatable, raw*): it runs in an environment table of its own,
 *   and io, os and package are never opened in the VM.
 * - Every run (the top-level chunk at load, then each request) is a coroutine with a Lua count
 *   hook (`debug.sethook`) that raises an error after `maxInstructions` instructions. After the
 *   first overrun the hook fires on every instruction, so a `pcall` in the script cannot carry on.
 *   Envoy runs its scripts as coroutines too; `respond()` yields, as in Envoy, so the script goes
 *   no further.
 * - The VM's memory is capped (`maxMemoryBytes`): an allocation past it is Lua's "not enough
 *   memory" error, not a process crash. One request makes at most `maxOperations` header changes
 *   and log lines.
 * - Work inside one C function (a slow pattern in `string.find`) is not counted by the hook;
 *   header sizes bound it.
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
   * Throws a RequestScriptError when the script fails (a Lua error, the instruction or memory
   * cap); the header changes it made before failing are applied.
   */
  onRequest(headers: RequestHeaders): LocalReply | undefined;
  close(): void;
}

export interface RequestScriptOptions {
  readonly inlineCode: string;
  /** Lua instructions one call may run before it is stopped with an error. */
  readonly maxInstructions: number;
  /** Most bytes the script's Lua VM may hold (default 32 MiB). */
  readonly maxMemoryBytes?: number;
  readonly logger: Logger;
}

/** Why a script failed on a request. */
export type RequestScriptFailure = 'error' | 'instruction_limit';

/**
 * A script failed on a request. Envoy's Lua filter logs such an error, counts it
 * (`http.<stat_prefix>.lua.errors`) and lets the request continue with the headers as the script
 * left them; revtun's egress listener does the same.
 */
export class RequestScriptError extends RevtunError {
  readonly reason: RequestScriptFailure;

  constructor(reason: RequestScriptFailure, message: string) {
    super('ERR_SCRIPT', message);
    this.reason = reason;
  }
}

export const defaultMaxMemoryBytes = 32 * 1024 * 1024;
/** Header changes plus log lines one request may make. */
const maxOperations = 1000;

/**
 * Runs once per VM with the libraries it opened (base, coroutine, table, string, math, debug):
 * keeps what it needs in locals and gives the script an environment with only the safe parts.
 * `setup(code, max_instructions, max_operations)` returns "ok" and leaves the per-request runner in
 * the global __revtun_on_request, or returns why the script cannot run.
 *
 * The runner takes the headers as "\n" name "\1" value ... "\n" (names are tokens and values
 * contain no control characters but tab, so neither separator can occur in them) and returns
 * three strings: the outcome ("ok", "reply", "overrun" or "error:<message>"); the operations in
 * order, each field followed by "\2": "a"/"p" name value (add/replace), "d" name (remove),
 * "l" level message, and for a reply "s" status, "h" name value, "b"; and the reply's body.
 * They go back to JavaScript as C strings, hence no NUL (a log message's NUL and "\2" are
 * escaped; a body may not contain NUL).
 */
const prelude = String.raw`
local sethook = debug.sethook
local cocreate, coresume, costatus, coyield = coroutine.create, coroutine.resume, coroutine.status, coroutine.yield
local load, setmetatable, error, type, tostring, pairs = load, setmetatable, error, type, tostring, pairs
local find, sub, lower, gsub, concat = string.find, string.sub, string.lower, string.gsub, table.concat

-- Bytecode is nothing a header script needs (and without load it is useless anyway).
string.dump = nil

function setup(code, max_instructions, max_operations)
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

  -- The request being run: its headers as the runner's string, the script's changes on top of
  -- them (name -> list of values, or false once removed), and the operations to hand back.
  local block, changed, out, n_out, reply_body = "", {}, {}, 0, ""

  local operations = 0
  local function emit(what, a, b)
    if operations >= max_operations then
      error("more than " .. max_operations .. " header changes and log lines in one request", 3)
    end
    operations = operations + 1
    n_out = n_out + 1
    out[n_out] = what
    if a ~= nil then n_out = n_out + 1; out[n_out] = a end
    if b ~= nil then n_out = n_out + 1; out[n_out] = b end
  end

  local function string_arg(what, value, level)
    local kind = type(value)
    if kind == "string" then return value end
    if kind == "number" then return tostring(value) end
    error(what .. " must be a string, not " .. kind, level + 1)
  end

  local function header_name(call, name)
    name = lower(string_arg(call .. ": the header name", name, 3))
    if sub(name, 1, 1) == ":" then
      error(call .. ": \"" .. name .. "\": revtun scripts cannot change pseudo-headers", 3)
    end
    if not find(name, "^[%w!#$%%&'*+.^_\96|~-]+$") then
      error(call .. ": \"" .. name .. "\" is not a valid header name", 3)
    end
    return name
  end

  local function header_value(call, name, value)
    value = string_arg(call .. ": the value of " .. name, value, 3)
    if find(value, "[%z\1-\8\10-\31\127]") then
      error(call .. ": the value of " .. name .. " contains a control character (CR, LF, NUL ...)", 3)
    end
    return value
  end

  local function original(name)
    local start = find(block, "\n" .. name .. "\1", 1, true)
    if start == nil then return nil end
    local from = start + #name + 2
    return sub(block, from, find(block, "\n", from, true) - 1)
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
  local function check_self(self, expected, call)
    if self ~= expected then error("call " .. call .. " with a colon", 3) end
  end

  local header_methods = methods_of("headers", "get, add, replace and remove")
  local headers = setmetatable({}, {
    __index = header_methods, __newindex = read_only("headers"), __metatable = "headers",
  })

  function header_methods.get(self, name)
    check_self(self, headers, "headers:get(name)")
    name = lower(string_arg("headers:get(): the header name", name, 2))
    local values = changed[name]
    if values == nil then return original(name) end
    if values == false or values[1] == nil then return nil end
    return concat(values, ", ")
  end
  function header_methods.add(self, name, value)
    check_self(self, headers, "headers:add(name, value)")
    name = header_name("headers:add()", name)
    value = header_value("headers:add()", name, value)
    local values = changed[name]
    if not values then
      local current = values == nil and original(name) or nil
      values = { current }
      changed[name] = values
    end
    values[#values + 1] = value
    emit("a", name, value)
  end
  function header_methods.replace(self, name, value)
    check_self(self, headers, "headers:replace(name, value)")
    name = header_name("headers:replace()", name)
    value = header_value("headers:replace()", name, value)
    changed[name] = { value }
    emit("p", name, value)
  end
  function header_methods.remove(self, name)
    check_self(self, headers, "headers:remove(name)")
    name = header_name("headers:remove()", name)
    changed[name] = false
    emit("d", name)
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
    local call = "request_handle:" .. method .. "(message)"
    handle_methods[method] = function(self, message)
      check_self(self, handle, call)
      message = string_arg("request_handle:" .. method .. "(): the message", message, 2)
      if find(message, "[%z\2]") then message = gsub(gsub(message, "%z", "\\0"), "\2", "\\2") end
      emit("l", level, message)
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
    if body ~= nil and find(body, "\0", 1, true) then
      error("request_handle:respond(): the body must not contain NUL bytes", 2)
    end
    for name, value in pairs(reply_headers) do
      if type(name) ~= "string" then
        error("request_handle:respond(): header names must be strings, not " .. type(name), 2)
      end
      name = lower(name)
      if name == ":status" then
        local status = string_arg("request_handle:respond(): :status", value, 2)
        local code = find(status, "^%d%d%d$") and tonumber(status)
        if not code or code < 200 or code > 599 then
          error("request_handle:respond(): :status must be a status code from 200 to 599, not \"" .. status .. "\"", 2)
        end
        emit("s", status)
      else
        name = header_name("request_handle:respond()", name)
        emit("h", name, header_value("request_handle:respond()", name, value))
      end
    end
    emit("b")
    reply_body = body or ""
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
  __revtun_on_request = function(request_headers)
    block, changed, out, n_out, operations, reply_body = request_headers, {}, {}, 0, 0, ""
    local result = run(on_request, handle)
    out[n_out + 1] = ""
    local results, body = concat(out, "\2", 1, n_out + 1), reply_body
    block, changed, out, reply_body = "", {}, {}, ""
    return result, results, body
  end
  return "ok"
end
`;

type LuaLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
const luaLevels = new Set<string>(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

/** What Node accepts in a header value (lib/_http_common.js checkInvalidHeaderChar). */
const headerValuePattern = /^[\t\x20-\x7e\x80-\xff]*$/;

interface Wasmoon {
  readonly factory: LuaFactory;
  /** The standard libraries a header script's VM opens (never io, os or package). */
  readonly libraries: readonly LuaLibraries[];
  readonly registryIndex: number;
  readonly multipleResults: number;
}

let wasmoonPromise: Promise<Wasmoon> | undefined;

/** wasmoon's module and its WebAssembly, loaded on first use and shared by every script. */
function loadWasmoon(): Promise<Wasmoon> {
  wasmoonPromise ??= import('wasmoon').then(
    ({ LuaFactory, LuaLibraries, LUA_REGISTRYINDEX, LUA_MULTRET }) => ({
      factory: new LuaFactory(),
      libraries: [
        LuaLibraries.Base,
        LuaLibraries.Coroutine,
        LuaLibraries.Table,
        LuaLibraries.String,
        LuaLibraries.Math,
        LuaLibraries.Debug,
      ],
      registryIndex: LUA_REGISTRYINDEX,
      multipleResults: LUA_MULTRET,
    }),
    (error: unknown) => {
      wasmoonPromise = undefined;
      throw error;
    },
  );
  return wasmoonPromise;
}

/** The headers as the runner reads them: "\n" name "\1" value ... "\n". */
function encodeHeaders(headers: RequestHeaders): string {
  let block = '\n';
  for (const [name, value] of Object.entries(headers.pseudo)) block += `${name}\u0001${value}\n`;
  for (const [name, value] of Object.entries(headers.toObject())) {
    block += `${name}\u0001${Array.isArray(value) ? value.join(', ') : value}\n`;
  }
  return block;
}

class LuaRequestScript implements RequestScript {
  readonly #engine: LuaEngine;
  readonly #wasmoon: Wasmoon;
  readonly #logger: Logger;
  readonly #maxInstructions: number;
  readonly #maxMemoryBytes: number;
  readonly #runner: bigint;
  #closed = false;

  constructor(options: {
    engine: LuaEngine;
    wasmoon: Wasmoon;
    runner: bigint;
    logger: Logger;
    maxInstructions: number;
    maxMemoryBytes: number;
  }) {
    this.#engine = options.engine;
    this.#wasmoon = options.wasmoon;
    this.#runner = options.runner;
    this.#logger = options.logger;
    this.#maxInstructions = options.maxInstructions;
    this.#maxMemoryBytes = options.maxMemoryBytes;
  }

  onRequest(headers: RequestHeaders): LocalReply | undefined {
    if (this.#closed) throw new RequestScriptError('error', 'the request script is closed');
    const [outcome = 'error:the script returned nothing', operations = '', body = ''] = this.#call(
      encodeHeaders(headers),
    );
    const reply = this.#apply(operations.split('\u0002'), body, headers);
    if (outcome === 'ok') return undefined;
    if (outcome === 'reply' && reply !== undefined) return reply;
    if (outcome === 'overrun') {
      throw new RequestScriptError(
        'instruction_limit',
        `the request script was stopped: it ran more than ${this.#maxInstructions} Lua instructions`,
      );
    }
    const message = outcome.startsWith('error:') ? outcome.slice('error:'.length) : outcome;
    throw new RequestScriptError('error', `the request script failed: ${message}`);
  }

  /** Calls the runner through Lua's C API (4 + n calls: wasmoon's wrappers would make dozens). */
  #call(block: string): string[] {
    const { global } = this.#engine;
    const { lua, address: L } = global;
    const base = lua.lua_gettop(L);
    // Only the script's own allocations count against the cap: the headers string is pushed
    // outside Lua's protected mode, where an allocation failure would abort the VM.
    global.setMemoryMax(undefined);
    lua.lua_rawgeti(L, this.#wasmoon.registryIndex, this.#runner);
    lua.lua_pushstring(L, block);
    global.setMemoryMax(this.#maxMemoryBytes);
    const status = lua.lua_pcallk(L, 1, this.#wasmoon.multipleResults, 0, 0, null);
    const results: string[] = [];
    for (let index = base + 1, top = lua.lua_gettop(L); index <= top; index += 1) {
      results.push(lua.lua_tolstring(L, index, null) ?? '');
    }
    lua.lua_settop(L, base);
    // Outside the coroutine (not the script's code): e.g. out of memory before it started.
    if (status !== 0) return [`error:${results[0] ?? `Lua status ${status}`}`];
    return results;
  }

  /** Applies the header changes and log lines in order; returns the local reply, if any. */
  #apply(
    operations: readonly string[],
    body: string,
    headers: RequestHeaders,
  ): LocalReply | undefined {
    let status: number | undefined;
    let replyHeaders: Record<string, string> | undefined;
    let index = 0;
    const next = () => operations[index++] ?? '';
    // The list ends with an empty field (every field is followed by "\2").
    while (index < operations.length - 1) {
      const what = next();
      switch (what) {
        case 'a':
        case 'p': {
          const name = next();
          const value = next();
          // Lua checked for control characters; a character Node refuses (above U+00FF) is
          // only visible once the UTF-8 is decoded.
          if (!headerValuePattern.test(value)) {
            throw new RequestScriptError(
              'error',
              `the request script failed: the value of ${name} is not a valid header value`,
            );
          }
          if (what === 'a') headers.add(name, value);
          else headers.replace(name, value);
          break;
        }
        case 'd':
          headers.remove(next());
          break;
        case 'l': {
          const level = next();
          this.#logger[luaLevels.has(level) ? (level as LuaLevel) : 'info']({ lua: true }, next());
          break;
        }
        case 's':
          status = Number(next());
          break;
        case 'h': {
          const name = next();
          const value = next();
          if (!headerValuePattern.test(value)) {
            throw new RequestScriptError(
              'error',
              `the request script failed: the value of ${name} in respond() is not a valid header value`,
            );
          }
          (replyHeaders ??= {})[name] = value;
          break;
        }
        case 'b':
          return { status: status ?? 200, headers: replyHeaders ?? {}, body };
        default:
          throw new Error(`request script: unknown operation "${what}"`);
      }
    }
    return undefined;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
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
  const wasmoon = await loadWasmoon();
  const engine = await wasmoon.factory.createEngine({
    openStandardLibs: false,
    injectObjects: false,
    enableProxy: false,
    traceAllocations: true,
  });
  try {
    const { global } = engine;
    for (const library of wasmoon.libraries) global.loadLibrary(library);
    const maxMemoryBytes = options.maxMemoryBytes ?? defaultMaxMemoryBytes;
    global.setMemoryMax(maxMemoryBytes);
    engine.doStringSync(prelude);
    const setup = global.get('setup') as (...args: unknown[]) => unknown;
    const outcome = String(setup(options.inlineCode, options.maxInstructions, maxOperations));
    if (outcome !== 'ok') {
      throw new RevtunError('ERR_CONFIG_INVALID', loadProblem(outcome, options.maxInstructions));
    }
    const { lua, address: L } = global;
    lua.lua_getglobal(L, '__revtun_on_request');
    const runner = BigInt(lua.luaL_ref(L, wasmoon.registryIndex));
    return new LuaRequestScript({
      engine,
      wasmoon,
      runner,
      logger: options.logger,
      maxInstructions: options.maxInstructions,
      maxMemoryBytes,
    });
  } catch (error) {
    engine.global.close();
    throw error;
  }
}
