import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/**
 * The sample gRPC app: the demo's workload and the integration tests' peer. It records every
 * call it receives (method and metadata) so tests can assert that a denied call never reached it.
 */

export const ORDERS_PROTO = fileURLToPath(new URL('../../proto/ward/demo/v1/orders.proto', import.meta.url));
export const ORDERS_SERVICE = 'ward.demo.v1.Orders';

export interface OrdersCall {
  readonly method: string;
  readonly metadata: Readonly<Record<string, string>>;
}

export interface Order {
  id: string;
  item: string;
  quantity: number;
  payload: Buffer;
  seenSubject: string;
}

export interface OrdersApp {
  readonly port: number;
  readonly calls: OrdersCall[];
  /** Sleep calls the client cancelled (the cancellation reached the app). */
  readonly cancelled: string[];
  close(): Promise<void>;
}

export function loadOrdersPackage(): grpc.GrpcObject {
  const def = protoLoader.loadSync(ORDERS_PROTO, { keepCase: false, longs: Number, defaults: true });
  return grpc.loadPackageDefinition(def);
}

export function ordersClientConstructor(): grpc.ServiceClientConstructor {
  const pkg = loadOrdersPackage() as unknown as { ward: { demo: { v1: { Orders: grpc.ServiceClientConstructor } } } };
  return pkg.ward.demo.v1.Orders;
}

function metaRecord(md: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(md.getMap())) out[k] = Buffer.isBuffer(v) ? v.toString('base64') : v;
  return out;
}

/** Starts the app on h2c at `host:port` (port 0 = any free port). */
export async function startOrdersApp(opts: { host?: string; port?: number; subjectHeader?: string } = {}): Promise<OrdersApp> {
  const subjectHeader = opts.subjectHeader ?? 'x-ward-subject';
  const server = new grpc.Server();
  const calls: OrdersCall[] = [];
  const cancelled: string[] = [];
  const record = (method: string, md: grpc.Metadata): string => {
    calls.push({ method, metadata: metaRecord(md) });
    const s = md.get(subjectHeader)[0];
    return typeof s === 'string' ? s : '';
  };
  const orders = ordersClientConstructor().service;
  server.addService(orders, {
    GetOrder: (call: grpc.ServerUnaryCall<{ id: string }, Order>, cb: grpc.sendUnaryData<Order>) => {
      const seen = record('GetOrder', call.metadata);
      if (call.request.id === 'missing') {
        cb({ code: grpc.status.NOT_FOUND, details: 'no such order' });
        return;
      }
      cb(null, { id: call.request.id, item: 'widget', quantity: 1, payload: Buffer.alloc(0), seenSubject: seen });
    },
    CreateOrder: (call: grpc.ServerUnaryCall<Order, Order>, cb: grpc.sendUnaryData<Order>) => {
      const seen = record('CreateOrder', call.metadata);
      const trailer = new grpc.Metadata();
      trailer.set('x-order-trailer', 'created');
      cb(null, { ...call.request, seenSubject: seen }, trailer);
    },
    DeleteOrder: (call: grpc.ServerUnaryCall<{ id: string }, Order>, cb: grpc.sendUnaryData<Order>) => {
      const seen = record('DeleteOrder', call.metadata);
      cb(null, { id: call.request.id, item: '', quantity: 0, payload: Buffer.alloc(0), seenSubject: seen });
    },
    ListOrders: (call: grpc.ServerWritableStream<{ count: number; intervalMs: number }, Order>) => {
      const seen = record('ListOrders', call.metadata);
      let i = 0;
      const next = (): void => {
        if (call.cancelled) return;
        if (i >= call.request.count) {
          call.end();
          return;
        }
        call.write({ id: String(i), item: 'widget', quantity: i, payload: Buffer.alloc(0), seenSubject: seen });
        i++;
        setTimeout(next, call.request.intervalMs);
      };
      next();
    },
    UploadOrders: (call: grpc.ServerReadableStream<Order, unknown>, cb: grpc.sendUnaryData<{ count: number; bytes: number }>) => {
      record('UploadOrders', call.metadata);
      let count = 0;
      let bytes = 0;
      call.on('data', (o: Order) => {
        count++;
        bytes += o.payload.length;
      });
      call.on('end', () => cb(null, { count, bytes }));
    },
    Chat: (call: grpc.ServerDuplexStream<Order, Order>) => {
      const seen = record('Chat', call.metadata);
      call.on('data', (o: Order) => call.write({ ...o, seenSubject: seen }));
      call.on('end', () => call.end());
    },
    Sleep: (call: grpc.ServerUnaryCall<{ ms: number }, { completed: boolean }>, cb: grpc.sendUnaryData<{ completed: boolean }>) => {
      record('Sleep', call.metadata);
      const timer = setTimeout(() => cb(null, { completed: true }), call.request.ms);
      call.on('cancelled', () => {
        clearTimeout(timer);
        cancelled.push('Sleep');
      });
    },
  });
  const host = opts.host ?? '127.0.0.1';
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${opts.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return {
    port,
    calls,
    cancelled,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        setTimeout(() => server.forceShutdown(), 2000).unref();
      }),
  };
}
