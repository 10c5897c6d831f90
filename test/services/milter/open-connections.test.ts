import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { OpenConnections } from "../../../services/milter/open-connections.ts";

interface Item {
  readonly name: number;
  openIndex: number;
}

const names = (items: readonly Item[]) => items.map((i) => i.name).sort((a, b) => a - b);

describe("OpenConnections", () => {
  it("lists what was added and not deleted, whatever the order", () => {
    const items = Array.from({ length: 5 }, (_, name) => ({ name, openIndex: -1 }));
    const open = new OpenConnections<Item>();
    for (const item of items) open.add(item);
    for (const i of [3, 0, 1]) open.delete(items[i] as Item);
    assert.deepEqual(names(open.list()), [2, 4]);
    assert.equal(open.size, 2);
    open.delete(items[4] as Item);
    open.delete(items[2] as Item);
    assert.deepEqual(open.list(), []);
    assert.ok(items.every((i) => i.openIndex === -1));
  });

  it("ignores deleting one it does not hold, and adding one twice", () => {
    const open = new OpenConnections<Item>();
    const a = { name: 1, openIndex: -1 };
    const b = { name: 2, openIndex: -1 };
    open.add(a);
    open.add(a);
    open.delete(b);
    assert.deepEqual(names(open.list()), [1]);
    open.delete(a);
    open.delete(a);
    assert.equal(open.size, 0);
  });

  it("agrees with a Set over any sequence of adds and deletes", () => {
    const op = fc.record({ add: fc.boolean(), which: fc.integer({ min: 0, max: 9 }) });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const items = Array.from({ length: 10 }, (_, name) => ({ name, openIndex: -1 }));
        const open = new OpenConnections<Item>();
        const model = new Set<Item>();
        for (const { add, which } of ops) {
          const item = items[which] as Item;
          if (add) {
            open.add(item);
            model.add(item);
          } else {
            open.delete(item);
            model.delete(item);
          }
          assert.deepEqual(names(open.list()), names([...model]));
          assert.equal(open.size, model.size);
        }
      }),
    );
  });
});
