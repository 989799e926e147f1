import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AccessRecord, compileTextFormat } from './access-format.ts';

function record(): AccessRecord {
  return new AccessRecord({
    method: 'GET',
    path: '/a',
    authority: 'example',
    version: '1.1',
    headers: { 'user-agent': 'ua "quoted"' },
    socket: { remoteAddress: '127.0.0.1', remotePort: 5000 },
  });
}

describe('compileTextFormat', () => {
  it('escapes what the caller chose in every operator, so no field can be forged', () => {
    const line = compileTextFormat('"%HOST_ID%" "%TENANT_ID%" "%CALLER%" "%REQ(USER-AGENT)%"');
    const forged = record();
    forged.hostId = 'a" "evil';
    forged.tenant = 't\nnext line';
    forged.caller = 'c\\';
    assert.equal(line(forged), String.raw`"a\" \"evil" "t\x0anext line" "c\\" "ua \"quoted\""`);
  });

  it("prints '-' for what is not known and %% as a literal %", () => {
    assert.equal(compileTextFormat('%NODE_ID% %RESPONSE_CODE% 100%%')(record()), '- 0 100%');
  });

  it('refuses an unknown operator and a header operator without a name', () => {
    assert.throws(() => compileTextFormat('%NOPE%'), /unknown operator %NOPE%/);
    assert.throws(() => compileTextFormat('%REQ()%'), /needs a header name/);
  });
});
