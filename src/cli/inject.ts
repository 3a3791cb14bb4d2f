import { readFileSync, writeFileSync } from 'node:fs';
import { parsePortList } from '../inject/capture.ts';
import { injectManifests } from '../inject/manifests.ts';
import { defaultSettings, type InjectorSettings, SIDECAR_NODE_OPTIONS } from '../inject/settings.ts';
import { type Command, parseFlags, UsageError } from './command.ts';

/** Flags shared by `ward inject` and `ward injector`: the injector-wide settings. */
export const SETTINGS_FLAGS = {
  image: { type: 'string' },
  'image-pull-policy': { type: 'string' },
  'inbound-port': { type: 'string' },
  'outbound-port': { type: 'string' },
  'admin-port': { type: 'string' },
  'proxy-uid': { type: 'string' },
  'proxy-gid': { type: 'string' },
  'proxy-cpu': { type: 'string' },
  'proxy-memory': { type: 'string' },
  'proxy-cpu-limit': { type: 'string' },
  'proxy-memory-limit': { type: 'string' },
  'proxy-node-options': { type: 'string' },
  'native-sidecar': { type: 'string' },
  'capture-outbound': { type: 'string' },
  'exclude-outbound-ports': { type: 'string' },
  'control-plane': { type: 'string' },
  'client-issuer': { type: 'string' },
  'control-plane-ca': { type: 'string' },
  'drain-seconds': { type: 'string' },
} as const;

export const SETTINGS_HELP = `Sidecar settings (every injected pod; annotations override most per pod):
      --image IMAGE                 ward image for the sidecar and init container (default ward:0.1.0)
      --image-pull-policy POLICY    Always | IfNotPresent (default) | Never
      --inbound-port N              sidecar inbound listener (default 15006)
      --outbound-port N             sidecar egress listener (default 15001)
      --admin-port N                sidecar admin port, /healthz and /readyz (default 15000)
      --proxy-uid N, --proxy-gid N  the sidecar's uid/gid, exempt from capture (default 1337)
      --proxy-cpu Q, --proxy-memory Q, --proxy-cpu-limit Q, --proxy-memory-limit Q
                                    sidecar resources (default 50m, 128Mi, 1, 256Mi)
      --proxy-node-options=FLAGS    the sidecar's NODE_OPTIONS, '' for none (default
                                    '${SIDECAR_NODE_OPTIONS}')
      --native-sidecar true|false   init container with restartPolicy Always (default true; k8s >= 1.29)
      --capture-outbound true|false redirect the app's outbound TCP to the egress listener (default true)
      --exclude-outbound-ports LIST outbound ports never captured (default 53)
      --control-plane HOST:PORT     take policy from ward control-plane (default: a ConfigMap per service)
      --client-issuer URL           issuer of the sidecars' own OAuth clients (ward.dev/client-issuer)
      --control-plane-ca CONFIGMAP  ConfigMap (key ca.crt) with the control plane's CA: sidecars use TLS
      --drain-seconds N             in-flight calls may finish this long on shutdown (default 10)`;

type SettingsValues = { [K in keyof typeof SETTINGS_FLAGS]?: string | undefined };

export function settingsFromFlags(v: SettingsValues): InjectorSettings {
  const int = (name: keyof SettingsValues, min: number, max: number): number | undefined => {
    const raw = v[name];
    if (raw === undefined) return undefined;
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}, got '${raw}'`);
    return Number(raw);
  };
  const bool = (name: keyof SettingsValues): boolean | undefined => {
    const raw = v[name];
    if (raw === undefined) return undefined;
    if (raw !== 'true' && raw !== 'false') throw new UsageError(`--${name} must be true or false, got '${raw}'`);
    return raw === 'true';
  };
  const base = defaultSettings();
  const pull = v['image-pull-policy'];
  if (pull !== undefined && pull !== 'Always' && pull !== 'IfNotPresent' && pull !== 'Never') {
    throw new UsageError(`--image-pull-policy must be Always, IfNotPresent or Never, got '${pull}'`);
  }
  let excludeOutboundPorts = base.excludeOutboundPorts;
  if (v['exclude-outbound-ports'] !== undefined) {
    try {
      excludeOutboundPorts = parsePortList(v['exclude-outbound-ports'], '--exclude-outbound-ports');
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const overrides: Partial<InjectorSettings> = {
    resources: {
      cpuRequest: v['proxy-cpu'] ?? base.resources.cpuRequest,
      memoryRequest: v['proxy-memory'] ?? base.resources.memoryRequest,
      cpuLimit: v['proxy-cpu-limit'] ?? base.resources.cpuLimit,
      memoryLimit: v['proxy-memory-limit'] ?? base.resources.memoryLimit,
    },
    excludeOutboundPorts,
  };
  const set = <K extends keyof InjectorSettings>(k: K, value: InjectorSettings[K] | undefined): void => {
    if (value !== undefined) overrides[k] = value;
  };
  set('image', v.image);
  set('imagePullPolicy', pull);
  set('inboundPort', int('inbound-port', 1, 65535));
  set('outboundPort', int('outbound-port', 1, 65535));
  set('adminPort', int('admin-port', 1, 65535));
  set('proxyUid', int('proxy-uid', 1, 2 ** 31 - 1));
  set('proxyGid', int('proxy-gid', 1, 2 ** 31 - 1));
  set('nativeSidecar', bool('native-sidecar'));
  set('captureOutbound', bool('capture-outbound'));
  set('controlPlane', v['control-plane']);
  set('clientIssuer', v['client-issuer']);
  set('controlPlaneCa', v['control-plane-ca']);
  set('drainSeconds', int('drain-seconds', 0, 3600));
  const nodeOptions = v['proxy-node-options'];
  if (nodeOptions !== undefined) {
    // Flags only: NODE_OPTIONS is split on spaces, and anything else would stop every sidecar.
    const flags = nodeOptions.trim() === '' ? [] : nodeOptions.trim().split(/\s+/);
    const bad = flags.find((f) => !/^--[a-z0-9][a-z0-9_-]*(=\S+)?$/.test(f));
    if (bad !== undefined) throw new UsageError(`--proxy-node-options: '${bad}' is not a --flag or --flag=value`);
    set('nodeOptions', flags.join(' '));
  }
  const s = defaultSettings(overrides);
  if (new Set([s.inboundPort, s.outboundPort, s.adminPort]).size !== 3) throw new UsageError('--inbound-port, --outbound-port and --admin-port must differ');
  return s;
}

const HELP = `Usage: ward inject [-f FILE] [-o FILE] [--all] [options]

Reads Kubernetes YAML (several documents; Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
Job, CronJob, and List) and writes it back with the ward sidecar and its traffic-capture init
container injected into every opted-in workload, like 'istioctl kube-inject'. Other documents
and fields are left as they are. Injecting twice changes nothing.

A workload is opted in by its pod template's annotation or label 'ward.dev/inject: enabled',
or by a Namespace document in the same input labelled 'ward.dev/inject: enabled', or by --all.
'ward.dev/inject: disabled' always opts out. Per-pod annotations: docs/kubernetes.md.

Options:
  -f, --filename FILE     input ('-' or absent: standard input)
  -o, --output FILE       output (absent: standard output)
      --all               inject every workload that does not opt out
  -n, --namespace NS      namespace of objects without one (default: default)
  -q, --quiet             do not report what was injected or skipped on stderr
${SETTINGS_HELP}
  -h, --help              show this help

Exit status: 0 done, 1 a workload opted in but cannot be injected, or a Namespace's
ward.dev/inject label is not one of enabled, disabled, true, false (nothing is written), 2 usage.
`;

export const command: Command = {
  name: 'inject',
  summary: 'Inject the sidecar into Kubernetes YAML (like istioctl kube-inject)',
  help: HELP,
  async run(argv) {
    const { values } = parseFlags(argv, {
      filename: { type: 'string', short: 'f' },
      output: { type: 'string', short: 'o' },
      all: { type: 'boolean' },
      namespace: { type: 'string', short: 'n' },
      quiet: { type: 'boolean', short: 'q' },
      ...SETTINGS_FLAGS,
    });
    const settings = settingsFromFlags(values);
    const file = values.filename ?? '-';
    const text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
    const { output, reports } = injectManifests(text, file === '-' ? '(stdin)' : file, settings, {
      all: values.all === true,
      defaultNamespace: values.namespace ?? 'default',
    });
    const refused = reports.filter((r) => r.outcome === 'refused');
    if (values.quiet !== true || refused.length > 0) {
      for (const r of values.quiet === true ? refused : reports) process.stderr.write(`ward inject: ${r.ref}: ${r.outcome}: ${r.detail}\n`);
    }
    if (refused.length > 0) return 1;
    if (values.output === undefined) process.stdout.write(output);
    else writeFileSync(values.output, output);
    return 0;
  },
};
