/**
 * The key paths a config schema allows, read from the zod schemas themselves: for check-config's
 * "did you mean" hints and for the test that holds the README's configuration reference to the
 * schema. Walks the input side (what a YAML file may contain), through optional, default and
 * transform wrappers.
 */
import type { z } from 'zod';
import type { KeyPath } from '../config/load.ts';

/** The parts of zod 4's internal definition this walk reads. */
interface Def {
  readonly type: string;
  readonly shape?: Record<string, z.ZodType>;
  readonly element?: z.ZodType;
  readonly innerType?: z.ZodType;
  readonly in?: z.ZodType;
  readonly options?: readonly z.ZodType[];
}

const defOf = (schema: z.ZodType): Def => (schema as unknown as { _zod: { def: Def } })._zod.def;

/** The object schemas `schema` may be (several for a union of objects), wrappers removed. */
function objectsOf(schema: z.ZodType): Array<Record<string, z.ZodType>> {
  const def = defOf(schema);
  if (def.type === 'object' && def.shape !== undefined) return [def.shape];
  if (def.innerType !== undefined) return objectsOf(def.innerType);
  if (def.type === 'pipe' && def.in !== undefined) return objectsOf(def.in);
  if (def.type === 'union' && def.options !== undefined) return def.options.flatMap(objectsOf);
  return [];
}

/** The element schema when `schema` is an array (wrappers removed). */
function elementOf(schema: z.ZodType): z.ZodType | undefined {
  const def = defOf(schema);
  if (def.type === 'array') return def.element;
  if (def.innerType !== undefined) return elementOf(def.innerType);
  if (def.type === 'pipe' && def.in !== undefined) return elementOf(def.in);
  return undefined;
}

/**
 * Every key path a config may set, in the README's notation: `a.b`, `a[].b` for the objects of an
 * array. An object contributes its own path and its keys'; an array of scalars is one leaf.
 */
export function configKeyPaths(schema: z.ZodType): Array<{ path: string; leaf: boolean }> {
  const paths: Array<{ path: string; leaf: boolean }> = [];
  const walk = (node: z.ZodType, prefix: string): void => {
    const element = elementOf(node);
    const shapes = objectsOf(element ?? node);
    const here = element === undefined || shapes.length === 0 ? prefix : `${prefix}[]`;
    if (shapes.length === 0) {
      if (prefix !== '') paths.push({ path: prefix, leaf: true });
      return;
    }
    if (prefix !== '') paths.push({ path: prefix, leaf: false });
    const seen = new Set<string>();
    for (const shape of shapes) {
      for (const [key, child] of Object.entries(shape)) {
        if (seen.has(key)) continue;
        seen.add(key);
        walk(child, here === '' ? key : `${here}.${key}`);
      }
    }
  };
  walk(schema, '');
  return paths;
}

/**
 * The keys allowed in the map at `path` of a document (numbers index arrays), or undefined when
 * `path` leads to no map in the schema.
 */
export function keysAt(schema: z.ZodType, path: KeyPath): string[] | undefined {
  let nodes: z.ZodType[] = [schema];
  for (const key of path) {
    nodes = nodes.flatMap((node): z.ZodType[] => {
      if (typeof key === 'number') {
        const element = elementOf(node);
        return element === undefined ? [] : [element];
      }
      return objectsOf(node).flatMap((shape) => (shape[key] === undefined ? [] : [shape[key]]));
    });
  }
  const keys = new Set(nodes.flatMap((node) => objectsOf(node).flatMap(Object.keys)));
  return keys.size === 0 ? undefined : [...keys];
}
